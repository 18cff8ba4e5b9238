#!/usr/bin/env python3
"""Independent check of a moat audit log, written from the README's
description only (no moat code): canonical form, SHA-256 hashes, links,
sequence numbers, and every checkpoint's Ed25519 signature (verified with
a small pure-Python Ed25519 implementation, so nothing beyond the standard
library is needed).

usage: audit_verify.py LOG PUBKEY_HEX
Prints one line per problem and a summary; exit 0 when everything checks
out and the log ends with a signed checkpoint, 1 otherwise.
"""
import hashlib
import json
import sys

# --- Ed25519 verification (RFC 8032, section 5.1.7), pure Python ----------
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _recover_x(y, sign):
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


def _decode_point(b):
    if len(b) != 32:
        return None
    y = int.from_bytes(b, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


def _add(p1, p2):
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(s, pt):
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = _add(q, pt)
        pt = _add(pt, pt)
        s >>= 1
    return q


def _equal(p1, p2):
    x1, y1, z1, _ = p1
    x2, y2, z2, _ = p2
    return (x1 * z2 - x2 * z1) % P == 0 and (y1 * z2 - y2 * z1) % P == 0


_BY = 4 * pow(5, P - 2, P) % P
BASE = (_recover_x(_BY, 0), _BY, 1, _recover_x(_BY, 0) * _BY % P)


def ed25519_verify(public, msg, sig):
    if len(public) != 32 or len(sig) != 64:
        return False
    a = _decode_point(public)
    r = _decode_point(sig[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(sig[32:], "little")
    if s >= L:
        return False
    h = int.from_bytes(hashlib.sha512(sig[:32] + public + msg).digest(), "little") % L
    return _equal(_mul(s, BASE), _add(r, _mul(h, a)))


# --- the log ---------------------------------------------------------------
GENESIS = "0" * 64
KEYS = ["data", "hash", "kind", "prev", "run", "seq", "ts"]


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def check(path, public_hex):
    public = bytes.fromhex(public_hex)
    problems = []
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.endswith(b"\n"):
        problems.append("incomplete tail: the file does not end with a newline")
    lines = raw.split(b"\n")[:-1]
    prev_hash, prev_seq = GENESIS, -1
    checkpoints, last_cp = 0, None
    for n, line in enumerate(lines, 1):
        try:
            e = json.loads(line.decode("utf-8"))
        except ValueError as err:
            problems.append(f"line {n}: not JSON ({err})")
            prev_hash, prev_seq = None, None
            continue
        if not isinstance(e, dict) or sorted(e) != KEYS:
            problems.append(f"line {n}: wrong keys")
            prev_hash, prev_seq = None, None
            continue
        if canonical(e) != line:
            problems.append(f"line {n}: not in canonical form")
        body = {k: v for k, v in e.items() if k != "hash"}
        if hashlib.sha256(canonical(body)).hexdigest() != e["hash"]:
            problems.append(f"line {n}: hash mismatch")
        if prev_seq is not None and (e["seq"] != prev_seq + 1 or e["prev"] != prev_hash):
            problems.append(f"line {n}: broken link (seq {e['seq']} after {prev_seq})")
        if e["kind"] == "checkpoint":
            d = e["data"]
            msg = f"moat-audit-checkpoint-v1 {d.get('seq')} {d.get('hash')}".encode()
            ok = (
                d.get("seq") == e["seq"] - 1
                and d.get("hash") == e["prev"]
                and d.get("key") == public_hex
                and ed25519_verify(public, msg, bytes.fromhex(d.get("sig", "")))
            )
            if ok:
                checkpoints += 1
                last_cp = e["seq"]
            else:
                problems.append(f"line {n}: checkpoint signature does not verify")
        prev_hash, prev_seq = e["hash"], e["seq"]
    if not lines:
        problems.append("no entries")
    elif last_cp != prev_seq:
        problems.append("the log does not end with a signed checkpoint")
    return problems, len(lines), checkpoints


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    problems, n, cps = check(sys.argv[1], sys.argv[2].strip())
    for p in problems:
        print("PROBLEM:", p)
    print(f"{n} entries, {cps} signed checkpoints: {'OK' if not problems else 'NOT OK'}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
