#!/usr/bin/env bash
# Differential check of our Exclusive XML Canonicalization (src/saml/c14n.rs) against xmlsec1
# (libxml2's xmlC14NExecute), on the c14n fuzz corpus and the SAML fixtures.
#
#   bash scripts/c14n-diff.sh [MAX_FILES]
#
# For every input (tests/fixtures/saml/**/*.xml, then fuzz/corpus/c14n/*, at most MAX_FILES in
# all), examples/c14n.rs inserts an enveloped ds:Signature template as the first child of the
# document element, whose one Reference points at that element by ID (an ID attribute is
# added when it has none) through enveloped-signature + exc-c14n. xmlsec1 signs it with
# --store-references, and the PreDigest bytes it dumps (what it digested) are compared byte for
# byte with what our canonicalizer makes of the same document (the document element, the
# Signature left out). Each input is tried twice, as the fuzz target does: without
# InclusiveNamespaces and with PrefixList="xs #default".
#
# Inputs that our parser or libxml2 refuses are not compared; they are counted by reason.
# Differences are written to $C14N_DIFF_OUT (default target/c14n-diff/) as NAME.VARIANT.xml
# (the signed template), .ours and .xmlsec1, and every skipped input with who refused it and
# why to skipped.tsv there. Exit status 1 when any comparison differs.
# Not part of `make test`. Needs xmlsec1 (Debian package xmlsec1, tried with 1.2.37) and python3.
#
# Known outcomes (BENCHMARKS.md has the numbers, docs/threat-model.md the reasoning):
# - Identical output on every input both sides take.
# - Refused by both, at canonicalization: relative namespace URIs (Canonical XML 1.0 2.1).
# - Refused by us only, deliberately: undeclared namespace prefixes (a libxml2 namespace error
#   is not fatal: the name is kept with its colon and no namespace), processing instructions,
#   and, though this corpus has none that libxml2 takes, DOCTYPE/entities and non-UTF-8.
# - Refused by libxml2 only: namespace names its URI parser rejects (non-ASCII, `[`, spaces),
#   XML declarations without version, `]]>` in text, attributes not separated by whitespace.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MAX_FILES="${1:-0}"
if ! [[ "$MAX_FILES" =~ ^[0-9]+$ ]]; then
    echo "usage: bash scripts/c14n-diff.sh [MAX_FILES]" >&2
    exit 2
fi
for tool in xmlsec1 python3 cargo; do
    command -v "$tool" >/dev/null || { echo "c14n-diff: $tool is required" >&2; exit 2; }
done
OUT="${C14N_DIFF_OUT:-$ROOT/target/c14n-diff}"

(cd "$ROOT" && nice cargo build --quiet --example c14n)
BIN="$ROOT/target/debug/examples/c14n"

nice python3 - "$ROOT" "$BIN" "$OUT" "$MAX_FILES" <<'PY'
import collections, os, re, shutil, subprocess, sys, tempfile, time

root, binary, out_dir, max_files = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
keys = os.path.join(root, "tests/fixtures/saml/keys")
key = f"{keys}/idp-rsa.key,{keys}/idp-rsa.crt"
VARIANTS = [("plain", ""), ("xs-default", "xs,#default")]

fixtures = sorted(
    os.path.join(d, f)
    for d, _, fs in os.walk(os.path.join(root, "tests/fixtures/saml"))
    for f in fs
    if f.endswith(".xml")
)
corpus_dir = os.path.join(root, "fuzz/corpus/c14n")
corpus = sorted(os.path.join(corpus_dir, f) for f in os.listdir(corpus_dir)) if os.path.isdir(corpus_dir) else []
inputs = fixtures + corpus
if max_files:
    inputs = inputs[:max_files]

shutil.rmtree(out_dir, ignore_errors=True)
os.makedirs(out_dir)
work = tempfile.mkdtemp(prefix="c14n-diff.")


def run(cmd, timeout=30):
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        return -1, b"", b"timeout"


def xmlsec1_verdict(path, id_node):
    """(None, predigest bytes) when xmlsec1 signs, else (reason, None)."""
    cmd = ["xmlsec1", "--sign"]
    if id_node:
        cmd += ["--id-attr:ID", id_node]
    cmd += ["--privkey-pem", key, "--node-xpath", "/*/*[1]", "--store-references", "--output", "/dev/null", path]
    rc, out, err = run(cmd)
    if rc == 0:
        start = b"== PreDigest data - start buffer:\n"
        end = b"\n== PreDigest data - end buffer"
        i = out.find(start)
        if i < 0:
            return "xmlsec1: no PreDigest in its output", None
        i += len(start)
        return None, out[i : out.index(end, i)]
    err = err.decode("utf-8", "replace")
    m = re.search(r"^C14N error : (.*)$", err, re.M)
    if m:
        # libxml2's canonicalizer; its first message says why.
        msg = re.sub(r" : .*", "", m.group(1)) if m.group(1).startswith("Relative") else m.group(1)
        return "libxml2 C14N: " + msg.strip(), None
    m = re.search(r"xml error: \d+: ([^\n]*)", err)
    if m:
        msg = m.group(1)
        # Generalize the libxml2 message: names, numbers and quoted bits vary by input.
        msg = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", msg)
        msg = re.sub(r"0x[0-9A-Fa-f]+|\d+", "N", msg)
        msg = re.sub(r"(mismatch|[Tt]ag|name|[Ee]ntity|prefix|[Aa]ttribute)[ :]+\S+.*", r"\1 …", msg)
        return "libxml2: " + msg.strip(), None
    if "timeout" == err:
        return "xmlsec1: timeout", None
    if "does not return a single node" in err:
        return "xmlsec1: parsed, but no Signature where inserted", None
    last = [l for l in err.splitlines() if l.startswith("func=")]
    if last:
        m = re.search(r"subj=([^:]*):error=\d+:([^:]*)", last[0])
        return "xmlsec1: " + (f"{m.group(1)}: {m.group(2)}" if m else last[0][:80]), None
    return "xmlsec1: " + (err.strip().splitlines() or ["failed"])[0][:80], None


started = time.time()
stats = collections.Counter()
# Input name -> (who refuses, why): one reason per input (the variants agree in practice).
skipped_inputs = {}
differences = []
ref_modes = collections.Counter()

for path in inputs:
    name = os.path.relpath(path, root).replace("/", "_")
    stats["inputs"] += 1
    for vi, (variant, prefixes) in enumerate(VARIANTS):
        inj = os.path.join(work, "in.xml")
        cmd = [binary, "--inject", path, inj] + (["--prefixes", prefixes] if prefixes else [])
        rc, out, err = run(cmd)
        lines = out.decode().splitlines()
        ours_status = lines[0] if lines else "crash: " + err.decode("utf-8", "replace")[-200:]
        mode = lines[1] if len(lines) > 1 else "NOROOT"
        if mode == "NOROOT":
            # No start tag at all: ask xmlsec1 about the raw input.
            inj, id_node = path, None
        else:
            id_node = mode[3:] if mode.startswith("ID ") else None
        reason, theirs = xmlsec1_verdict(inj, id_node)
        if ours_status != "ok":
            # Acceptance by the parsers does not depend on the variant: classify once.
            if reason is None or reason.startswith("xmlsec1: parsed"):
                skipped_inputs[name] = ("we refuse only", ours_status)
            else:
                skipped_inputs[name] = ("both refuse", ours_status)
            break
        if vi == 0:
            ref_modes[mode.split(" ")[0]] += 1
        rc, ours, err = run([binary, inj, "--exclude-first-child"] + (["--prefixes", prefixes] if prefixes else []))
        if rc == 4:
            kind = "canonicalization: " + err.decode("utf-8", "replace").splitlines()[0]
            if reason is None:
                skipped_inputs[name] = ("we refuse only", kind)
            else:
                skipped_inputs[name] = ("both refuse", f"{kind} / {reason}")
            continue
        if rc != 0:
            stats["our parser refused the template-injected form of an accepted input"] += 1
            shutil.copy(inj, os.path.join(out_dir, f"{name}.{variant}.xml"))
            continue
        if reason is not None:
            skipped_inputs[name] = ("xmlsec1 refuses only", reason)
            continue
        stats["compared"] += 1
        if ours == theirs:
            stats["identical"] += 1
        else:
            stats["different"] += 1
            base = os.path.join(out_dir, f"{name}.{variant}")
            shutil.copy(inj, base + ".xml")
            open(base + ".ours", "wb").write(ours)
            open(base + ".xmlsec1", "wb").write(theirs)
            differences.append(f"{name}.{variant}")

shutil.rmtree(work, ignore_errors=True)
with open(os.path.join(out_dir, "skipped.tsv"), "w") as f:
    for n, (w, r) in sorted(skipped_inputs.items()):
        f.write(f"{n}\t{w}\t{r}\n")
xmlsec1_version = subprocess.run(["xmlsec1", "--version"], capture_output=True, text=True).stdout.strip()
print(f"c14n-diff: {stats['inputs']} inputs ({len(fixtures)} fixtures, {len(inputs) - min(len(fixtures), len(inputs))} corpus), "
      f"{xmlsec1_version}, {time.time() - started:.0f}s")
print(f"  comparisons (inputs both sides take x {len(VARIANTS)} variants: {', '.join(v for v, _ in VARIANTS)}): "
      f"{stats['compared']}, identical {stats['identical']}, different {stats['different']}")
print(f"  reference to the document element: " + ", ".join(f"{k} {v}" for k, v in sorted(ref_modes.items())))
if stats["our parser refused the template-injected form of an accepted input"]:
    print("  our parser refused the template-injected form of an accepted input: "
          f"{stats['our parser refused the template-injected form of an accepted input']}")
for who, title in (
    ("both refuse", "skipped, refused by both (our reason; inputs)"),
    ("we refuse only", "skipped, refused by us only, xmlsec1/libxml2 takes them (inputs)"),
    ("xmlsec1 refuses only", "skipped, refused by xmlsec1/libxml2 only (inputs)"),
):
    reasons = collections.Counter(r for w, r in skipped_inputs.values() if w == who)
    example = {}
    for n, (w, r) in sorted(skipped_inputs.items()):
        if w == who:
            example.setdefault(r, n)
    print(f"  {title}: {sum(reasons.values())}")
    for r, v in reasons.most_common():
        ex = f"  (e.g. {example[r]})" if who != "both refuse" else ""
        print(f"    {v:5}  {r}{ex}")
if differences:
    print(f"  DIFFERENT (inputs and outputs in {out_dir}):")
    for d in differences:
        print(f"    {d}")
    sys.exit(1)
PY
