"""Verifying Portcullis's signed assertion at the origin, in Python with PyJWT
(pip install "pyjwt[crypto]"). The origin trusts the X-Portcullis-* headers only after
this passes.

As a library:
    from python import AssertionVerifier
    verify = AssertionVerifier(
        jwks="https://app.example.com/.well-known/portcullis/jwks.json",
        issuer="https://auth.example.com",  # gateway.issuer
        audience="acme",                     # the tenant id
    )
    claims = verify(request.headers.get("X-Portcullis-Assertion"))  # raises if invalid

From the command line (prints the claims, exit status 1 when the assertion is refused):
    python3 python.py --jwks URL_OR_FILE --issuer ISS --audience AUD TOKEN
"""

import argparse
import json
import sys

import jwt

ALGORITHMS = ["ES256", "EdDSA"]


class AssertionVerifier:
    def __init__(self, jwks, issuer, audience):
        self.issuer = issuer
        self.audience = audience
        if jwks.startswith(("https://", "http://")):
            # Cached; refetched when an unknown key id appears (key rotation).
            self._client = jwt.PyJWKClient(jwks, cache_jwk_set=True, lifespan=300)
            self._keys = None
        else:
            with open(jwks, encoding="utf-8") as f:
                self._keys = jwt.PyJWKSet.from_dict(json.load(f))
            self._client = None

    def _key(self, token):
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        kid = jwt.get_unverified_header(token).get("kid")
        for k in self._keys.keys:
            if k.key_id == kid:
                return k.key
        raise jwt.InvalidTokenError(f"no key with id {kid!r} in the JWKS")

    def __call__(self, token):
        if not token:
            raise jwt.InvalidTokenError("no X-Portcullis-Assertion header")
        return jwt.decode(
            token,
            self._key(token),
            algorithms=ALGORITHMS,
            audience=self.audience,
            issuer=self.issuer,
            leeway=60,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--jwks", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--audience", required=True)
    p.add_argument("token")
    a = p.parse_args()
    try:
        claims = AssertionVerifier(a.jwks, a.issuer, a.audience)(a.token)
    except jwt.PyJWTError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 1
    print(json.dumps(claims, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
