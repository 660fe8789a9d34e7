// Verifying Portcullis's signed assertion at the origin, in Go with the standard library
// only (ES256 and EdDSA). The origin trusts the X-Portcullis-* headers only after this
// passes.
//
// As a library: copy Verifier into your server, then
//
//	v := &Verifier{JWKS: keys, Issuer: "https://auth.example.com", Audience: "acme"}
//	claims, err := v.Verify(r.Header.Get("X-Portcullis-Assertion"))
//
// (fetch https://HOST/.well-known/portcullis/jwks.json with ParseJWKS, and again when a
// token names an unknown key id: keys rotate).
//
// From the command line (prints the claims, exit status 1 when the assertion is refused):
//
//	go run . --jwks URL_OR_FILE --issuer ISS --audience AUD TOKEN
package main

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"strings"
	"time"
)

// Key is one public key of the gateway's JWKS.
type Key struct {
	Alg string
	EC  *ecdsa.PublicKey
	Ed  ed25519.PublicKey
}

// ParseJWKS reads the JWKS document (EC P-256 and OKP Ed25519 keys) by key id.
func ParseJWKS(doc []byte) (map[string]Key, error) {
	var set struct {
		Keys []struct{ Kty, Crv, Kid, X, Y string } `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil {
		return nil, err
	}
	keys := map[string]Key{}
	for _, k := range set.Keys {
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil {
			return nil, err
		}
		switch {
		case k.Kty == "EC" && k.Crv == "P-256":
			y, err := base64.RawURLEncoding.DecodeString(k.Y)
			if err != nil {
				return nil, err
			}
			pub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}
			if !pub.Curve.IsOnCurve(pub.X, pub.Y) {
				return nil, fmt.Errorf("key %s: not a P-256 point", k.Kid)
			}
			keys[k.Kid] = Key{Alg: "ES256", EC: pub}
		case k.Kty == "OKP" && k.Crv == "Ed25519" && len(x) == ed25519.PublicKeySize:
			keys[k.Kid] = Key{Alg: "EdDSA", Ed: ed25519.PublicKey(x)}
		}
	}
	return keys, nil
}

// Verifier checks the signature, the algorithm, iss, aud and the lifetime.
type Verifier struct {
	JWKS     map[string]Key
	Issuer   string
	Audience string
	Leeway   time.Duration
}

func (v *Verifier) Verify(token string) (map[string]any, error) {
	if token == "" {
		return nil, errors.New("no X-Portcullis-Assertion header")
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact JWS")
	}
	var header struct{ Alg, Kid string }
	if err := decodePart(parts[0], &header); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	key, ok := v.JWKS[header.Kid]
	if !ok {
		return nil, fmt.Errorf("no key with id %q in the JWKS", header.Kid)
	}
	if header.Alg != key.Alg {
		return nil, fmt.Errorf("algorithm %q does not match the key's %s", header.Alg, key.Alg)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, errors.New("signature: not base64url")
	}
	signed := []byte(parts[0] + "." + parts[1])
	switch key.Alg {
	case "ES256":
		h := sha256.Sum256(signed)
		if len(sig) != 64 || !ecdsa.Verify(key.EC, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			return nil, errors.New("signature does not verify")
		}
	case "EdDSA":
		if !ed25519.Verify(key.Ed, signed, sig) {
			return nil, errors.New("signature does not verify")
		}
	}
	var claims map[string]any
	if err := decodePart(parts[1], &claims); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	if claims["iss"] != v.Issuer {
		return nil, fmt.Errorf("issuer %v is not %s", claims["iss"], v.Issuer)
	}
	if !hasAudience(claims["aud"], v.Audience) {
		return nil, fmt.Errorf("audience %v does not include %s", claims["aud"], v.Audience)
	}
	now := time.Now()
	exp, ok1 := claims["exp"].(float64)
	iat, ok2 := claims["iat"].(float64)
	if !ok1 || !ok2 {
		return nil, errors.New("exp and iat are required")
	}
	if now.After(time.Unix(int64(exp), 0).Add(v.Leeway)) {
		return nil, errors.New("expired")
	}
	if now.Add(v.Leeway).Before(time.Unix(int64(iat), 0)) {
		return nil, errors.New("issued in the future")
	}
	if sub, _ := claims["sub"].(string); sub == "" {
		return nil, errors.New("sub is required")
	}
	return claims, nil
}

func decodePart(part string, out any) error {
	b, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

func hasAudience(aud any, want string) bool {
	switch a := aud.(type) {
	case string:
		return a == want
	case []any:
		for _, x := range a {
			if x == want {
				return true
			}
		}
	}
	return false
}

func readJWKS(src string) ([]byte, error) {
	if strings.HasPrefix(src, "https://") || strings.HasPrefix(src, "http://") {
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get(src)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s answered %d", src, resp.StatusCode)
		}
		return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	}
	return os.ReadFile(src)
}

func main() {
	jwks := flag.String("jwks", "", "JWKS URL or file")
	issuer := flag.String("issuer", "", "gateway.issuer")
	audience := flag.String("audience", "", "the tenant id")
	flag.Parse()
	doc, err := readJWKS(*jwks)
	if err == nil {
		var keys map[string]Key
		if keys, err = ParseJWKS(doc); err == nil {
			v := &Verifier{JWKS: keys, Issuer: *issuer, Audience: *audience, Leeway: time.Minute}
			var claims map[string]any
			if claims, err = v.Verify(flag.Arg(0)); err == nil {
				out, _ := json.Marshal(claims)
				fmt.Println(string(out))
				return
			}
		}
	}
	fmt.Fprintf(os.Stderr, "refused: %v\n", err)
	os.Exit(1)
}
