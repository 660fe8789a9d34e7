#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers and verifiers (cargo-fuzz / libFuzzer).
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET=600] [targets...]
#
# Installs cargo-fuzz if missing, seeds fuzz/corpus/<target>/ from the test fixtures, runs
# each target for the given time, prints one summary line per target and exits non-zero if
# any target crashed (inputs are left in fuzz/artifacts/<target>/). Not part of `make test`.
#
# Works on stable Rust: RUSTC_BOOTSTRAP=1 unlocks the nightly flags cargo-fuzz passes.
# FUZZ_SANITIZER=none|address|... picks the sanitizer (default: address, falling back to
# none when the sanitizer build fails). Extra libFuzzer flags: FUZZ_ARGS="-max_len=65536".
#
# Slow inputs are findings like crashes: any single input that runs longer than
# FUZZ_TIMEOUT seconds (default 2; the largest valid inputs take milliseconds) stops the
# target, is saved as fuzz/artifacts/<target>/timeout-* and counts as a failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ="$ROOT/fuzz"
ALL_TARGETS=(saml_response c14n jwt jwks cookie return_url config)

SECONDS_PER_TARGET="${1:-600}"
FUZZ_TIMEOUT="${FUZZ_TIMEOUT:-2}"
shift || true
if ! [[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]]; then
    echo "usage: bash scripts/fuzz.sh [SECONDS_PER_TARGET=600] [targets...]" >&2
    exit 2
fi
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL_TARGETS[@]}")
for t in "${TARGETS[@]}"; do
    if [[ ! " ${ALL_TARGETS[*]} " =~ " $t " ]]; then
        echo "unknown target '$t' (known: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done

export RUSTC_BOOTSTRAP=1
# The fuzz crate has its own workspace and target directory (fuzz/target).
unset CARGO_TARGET_DIR

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked || exit 1
fi

# ---------------------------------------------------------------------------------------
# Seed corpora (existing corpus files are kept; seeds are only added).

FIX="$ROOT/tests/fixtures/saml"
CORPUS="$FUZZ/corpus"

seed_files() { # target files...
    local dir="$CORPUS/$1"
    shift
    mkdir -p "$dir"
    local f
    for f in "$@"; do
        [ -f "$f" ] && cp -n "$f" "$dir/" 2>/dev/null
    done
}

seed_text() { # target name text
    mkdir -p "$CORPUS/$1"
    printf '%s' "$3" >"$CORPUS/$1/seed-$2"
}

seed_files saml_response "$FIX"/signed/*.xml "$FIX"/encrypted/*.xml "$FIX"/templates/*.xml
seed_files c14n "$FIX"/c14n/*.xml "$FIX"/c14n/*.c14n "$FIX"/signed/*.xml "$FIX"/templates/*.xml
seed_text c14n comments '<?xml version="1.0"?><!-- c --><a xmlns="urn:x" xmlns:b="urn:b" b:c="1&amp;&lt;&#xD;"><![CDATA[x<y]]><b:d/><?pi x?></a>'

# Tokens for the fixed expectations in fuzz/fuzz_targets/jwt.rs: ES256 ones signed with the
# P-256 key whose private scalar is SHA-256("portcullis-fuzz"), HS256 with "client-secret".
seed_text jwt valid 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImZ6MSIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL29wLmV4YW1wbGUiLCJhdWQiOiJwb3J0Y3VsbGlzLWNsaWVudCIsInN1YiI6ImFsaWNlIiwiZXhwIjoxNzE0NTY4NTAwLCJpYXQiOjE3MTQ1NjQ4OTAsIm5vbmNlIjoibi0wUzYiLCJlbWFpbCI6ImFsaWNlQGV4YW1wbGUuY29tIn0.p7acY19kEWmLGy37d5EBSXfQhtMlssn5RNk6-ZzdywaHEr6hvvZohwmTw8ahvIIrgv1-IVsol7EY2oFRRg5svQ'
seed_text jwt at-hash 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImZ6MSJ9.eyJpc3MiOiJodHRwczovL29wLmV4YW1wbGUiLCJhdWQiOiJwb3J0Y3VsbGlzLWNsaWVudCIsInN1YiI6ImFsaWNlIiwiZXhwIjoxNzE0NTY4NTAwLCJpYXQiOjE3MTQ1NjQ4OTAsIm5vbmNlIjoibi0wUzYiLCJlbWFpbCI6ImFsaWNlQGV4YW1wbGUuY29tIiwiYXRfaGFzaCI6InBaT3loRk4wWjllUWl2UHluaUgxR2ciLCJuYmYiOjE3MTQ1NjQ4ODB9.VjTjKF3JX01WFUjbgS3RkOU4LNdSUrqDr-N9LZcw9V2ETVTxrC-HalI0SGBZGihh-ehSEE9WZcBFPvYUZsJpFg'
seed_text jwt multi-aud 'eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJodHRwczovL29wLmV4YW1wbGUiLCJhdWQiOlsicG9ydGN1bGxpcy1jbGllbnQiLCJhcGk6Ly9hY21lLXgiXSwic3ViIjoiYWxpY2UiLCJleHAiOjE3MTQ1Njg1MDAsImlhdCI6MTcxNDU2NDg5MCwibm9uY2UiOiJuLTBTNiIsImVtYWlsIjoiYWxpY2VAZXhhbXBsZS5jb20iLCJhenAiOiJwb3J0Y3VsbGlzLWNsaWVudCJ9.ilPz9DC2fvuy4HJNtE9-cWe0HD1oQO356O4z1e98-e5zoL7F_riDsfqJWIpFuVnofPR4Om22eEjG-MiSYGzYxw'
seed_text jwt hs256 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL29wLmV4YW1wbGUiLCJhdWQiOiJwb3J0Y3VsbGlzLWNsaWVudCIsInN1YiI6ImFsaWNlIiwiZXhwIjoxNzE0NTY4NTAwLCJpYXQiOjE3MTQ1NjQ4OTAsIm5vbmNlIjoibi0wUzYiLCJlbWFpbCI6ImFsaWNlQGV4YW1wbGUuY29tIn0.vaUNrDQ4vY9ZuNLclM1KexLGfai1CePAQtPrgV22NMc'
seed_text jwt logout 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImZ6MSIsInR5cCI6ImxvZ291dCtqd3QifQ.eyJpc3MiOiJodHRwczovL29wLmV4YW1wbGUiLCJhdWQiOiJwb3J0Y3VsbGlzLWNsaWVudCIsImlhdCI6MTcxNDU2NDg5NSwianRpIjoiai0xIiwic2lkIjoicy0xIiwiZXZlbnRzIjp7Imh0dHA6Ly9zY2hlbWFzLm9wZW5pZC5uZXQvZXZlbnQvYmFja2NoYW5uZWwtbG9nb3V0Ijp7fX19._frKzFz0cgCZ6kM3KtDgTFcSt3h6GuGM5WHGCcg46KMyX0ZDxZoRbZsNBVx1OLyrUW76MH4iYVWmG4JkdtAlcw'
seed_text jwt rs256 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImZ6MSJ9.eyJpc3MiOiJodHRwczovL29wLmV4YW1wbGUiLCJhdWQiOiJwb3J0Y3VsbGlzLWNsaWVudCIsInN1YiI6ImFsaWNlIiwiZXhwIjoxNzE0NTY4NTAwLCJpYXQiOjE3MTQ1NjQ4OTAsIm5vbmNlIjoibi0wUzYiLCJlbWFpbCI6ImFsaWNlQGV4YW1wbGUuY29tIn0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'
seed_text jwt none 'eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL29wLmV4YW1wbGUiLCJhdWQiOiJwb3J0Y3VsbGlzLWNsaWVudCIsInN1YiI6ImFsaWNlIiwiZXhwIjoxNzE0NTY4NTAwLCJpYXQiOjE3MTQ1NjQ4OTAsIm5vbmNlIjoibi0wUzYiLCJlbWFpbCI6ImFsaWNlQGV4YW1wbGUuY29tIn0.'
seed_text jwt jwe 'eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d'

seed_text jwks ec '{"keys":[{"kty":"EC","crv":"P-256","kid":"fz1","alg":"ES256","use":"sig","x":"CkUmjN1fjJssiE0lWD7UkWz6IG9NVinvMX6BNYn2PyQ","y":"Qoqi8mI_Ik0XmJAi2lhDaXAksmYcHFcTLUUCh_CCwuA"}]}'
seed_text jwks okp '{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}'
seed_text jwks rsa '{"keys":[{"kty":"RSA","kid":"r1","use":"sig","alg":"RS256","e":"AQAB","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"},{"kty":"RSA","kid":"short","e":"AQAB","n":"AQAB"},{"kty":"EC","crv":"P-384","x":"","y":""},{"kty":"oct","k":"AAAA"},{"kty":"EC","crv":"P-256","use":"enc","d":"AA","x":"AA","y":"AA"}]}'
seed_text jwks empty '{"keys":[]}'

# Cookies signed with the fuzz target's key k1 for tenant "t" (pending: state "st").
seed_text cookie session 'v1.k1.AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8.M7NK8O7Syub4XMQlPB5eep1mNWFXq61kGYaOH6rABUo'
seed_text cookie pending 'v1.k1.fEP4wIQYuFNaHS4rfYc3RHeealc-NgH42t-LonUjR4E'
seed_text cookie unknown-key 'v1.k9.AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8.AAAA'
seed_text cookie padded 'v1.k0.AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=.x'

# The redirect tests' open-redirect attempts and the paths that must survive.
i=0
while IFS= read -r line; do
    i=$((i + 1))
    seed_text return_url "$i" "$(printf '%b' "$line")"
done <<'EOF'
/
/dashboard
/a/b?x=1&y=%2F
/a/./b/../c
//evil.com
/\\evil.com
\\\\evil.com
\\/evil.com
/%2F%2Fevil.com
/%2f/evil.com
%2F%2Fevil.com
/%5Cevil.com
/%09/evil.com
/\t/evil.com
/%0d%0aSet-Cookie:x=1
/\r\nLocation: https://evil.com
https://evil.com
http://evil.com/
javascript:alert(1)
JaVaScRiPt:alert(1)
data:text/html,x
evil.com
///evil.com
/%252F%252Fevil.com
/ /evil.com
/_portcullis/logout
/_portcullis
/a/%2e%2e/%2e%2e/_portcullis/logout
/a?b=%u2215%u2215evil.com#frag
/%E2%80%8B/x?%C3%A9=1
EOF

# Configuration documents: the documented example and OIDC/SAML variants of the tests'.
awk '/^```json/{f=1;next} /^```/{if(f)exit} f' "$ROOT/docs/configuration.md" >"$CORPUS/config.docs-example.tmp" 2>/dev/null
mkdir -p "$CORPUS/config"
if [ -s "$CORPUS/config.docs-example.tmp" ]; then
    mv "$CORPUS/config.docs-example.tmp" "$CORPUS/config/seed-docs-example"
else
    rm -f "$CORPUS/config.docs-example.tmp"
fi
GATEWAY='"gateway":{"cookie_keys":[{"id":"c1","secret":"COOKIE_KEY"}],"assertion_keys":[{"id":"a1","secret":"ASSERTION_KEY"}],"issuer":"https://gateway.test","admin_token":"ADMIN_TOKEN"}'
TENANT='"id":"acme","name":"Acme","hosts":["app.test"],"origin":"https://origin.test","public_paths":[{"path":"/health","match":"exact"},{"path":"/static/","match":"prefix","methods":["GET"]}],"groups":{"map":{"engineering":["eng"]},"roles":{"superuser":["admins"]}}'
OIDC='{"type":"oidc","name":"corp","label":"Corp SSO","issuer":"https://op.test","client_id":"gateway-client","client_secret":"CLIENT_SECRET"}'
CERT_B64="$(grep -v -- '-----' "$FIX/keys/idp-rsa.crt" | tr -d '\r\n')"
SAML_CERT='{"type":"saml","name":"corp-saml","label":"Corp SAML","idp_entity_id":"https://idp.example.com/metadata","idp_sso_url":"https://idp.example.com/sso","idp_certificates":["'"$CERT_B64"'"],"allow_idp_initiated":true,"mfa_authn_contexts":["urn:x"]}'
METADATA='<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" entityID=\"https://idp.example.com/metadata\"><md:IDPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\"><md:KeyDescriptor use=\"signing\"><ds:KeyInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:X509Data><ds:X509Certificate>'"$CERT_B64"'</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"https://idp.example.com/sso\"/></md:IDPSSODescriptor></md:EntityDescriptor>'
SAML_META='{"type":"saml","name":"meta","label":"Metadata","idp_metadata":"'"$METADATA"'"}'
seed_text config oidc "{$GATEWAY,\"tenants\":[{$TENANT,\"providers\":[$OIDC]}]}"
seed_text config saml "{$GATEWAY,\"tenants\":[{$TENANT,\"providers\":[$OIDC,$SAML_CERT,$SAML_META]}]}"
seed_text config invalid '{"gateway":{"cookie_keys":[]},"tenants":[{"id":"","hosts":["*"],"providers":[{"type":"nope"}]}]}'

# ---------------------------------------------------------------------------------------
# Build, then run each target.

cd "$FUZZ" || exit 1
SANITIZER="${FUZZ_SANITIZER:-}"
if [ -z "$SANITIZER" ]; then
    if cargo fuzz build --sanitizer address; then
        SANITIZER=address
    else
        echo "== the sanitizer build failed; falling back to --sanitizer none"
        SANITIZER=none
        cargo fuzz build --sanitizer none || exit 1
    fi
fi

LOGS="$FUZZ/target/fuzz-logs"
mkdir -p "$LOGS"
SUMMARY=()
FAILED=0
for t in "${TARGETS[@]}"; do
    mkdir -p "$FUZZ/artifacts/$t"
    before="$(ls "$FUZZ/artifacts/$t" | wc -l)"
    echo "== $t: ${SECONDS_PER_TARGET}s (sanitizer $SANITIZER, log $LOGS/$t.log)"
    # shellcheck disable=SC2086
    cargo fuzz run --sanitizer "$SANITIZER" "$t" "$CORPUS/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout="$FUZZ_TIMEOUT" -print_final_stats=1 ${FUZZ_ARGS:-} \
        >"$LOGS/$t.log" 2>&1
    rc=$?
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$LOGS/$t.log" | grep -o '[0-9]*$' | tail -1)"
    [ -z "$runs" ] && runs="$(grep -o '^#[0-9]*' "$LOGS/$t.log" | tail -1 | tr -d '#')"
    crashes=$(($(ls "$FUZZ/artifacts/$t" | wc -l) - before))
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes=1 # the fuzzer failed without writing an input: see the log
    fi
    line="$t: runs=${runs:-?} crashes=$crashes"
    if [ "$crashes" -gt 0 ]; then
        FAILED=1
        newest="$(ls -t "$FUZZ/artifacts/$t" 2>/dev/null | head -1)"
        [ -n "$newest" ] && line="$line input=fuzz/artifacts/$t/$newest"
        panic="$(grep -m1 -A1 "panicked at" "$LOGS/$t.log" | tr '\n' ' ')"
        [ -z "$panic" ] && panic="$(grep -m1 -E "ERROR: (libFuzzer|AddressSanitizer)|ALARM: working on the last Unit for" "$LOGS/$t.log")"
        [ -n "$panic" ] && line="$line ($panic)"
    fi
    echo "$line"
    SUMMARY+=("$line")
done

echo
echo "== summary"
printf '%s\n' "${SUMMARY[@]}"
exit "$FAILED"
