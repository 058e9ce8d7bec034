#!/usr/bin/env python3
"""Checks one `jwks-server probe --json` run against what its verifier is
known to let through, and prints one `ok - ...` or `FAIL - ...` line.

    python expect.py --probe FILE --exit-code N --catalogue FILE --route /auth \
        --library pyjwt --mode no-audience-check --label TEXT

The expected sets are written down here, per library and mode: the
defects each misconfiguration lets through, among those the server's
catalogue (`GET /test-tokens`) offers for the route. Everything else must be
refused, and the valid token accepted. Run by .ci/verifiers/run.sh.
"""

from __future__ import annotations

import argparse
import json
import sys

# Defects that only a signature check refuses: their claims are a valid
# token's, and only the key or the signature is wrong.
SIGNATURE = {
    "unknown-kid",
    "no-kid",
    "bad-signature",
    "hs256-public-key",
    "embedded-jwk",
    "jku",
    "ecdsa-zero-signature",
    # With no signature check, `alg: none` is just another header.
    "alg-none",
}

EXPECTED: dict[tuple[str, str], set[str]] = {
    ("pyjwt", "correct"): set(),
    ("jose", "correct"): set(),
    ("golang-jwt", "correct"): set(),
    # PyJWT still refuses unknown `crit` extensions with the signature check
    # off; the Go verifier refuses `crit` itself in every mode.
    ("pyjwt", "no-signature-check"): SIGNATURE,
    ("golang-jwt", "no-signature-check"): SIGNATURE,
    # decodeJwt reads no header at all, `crit` included.
    ("jose", "no-signature-check"): SIGNATURE | {"crit-unknown"},
    # PyJWT refuses a PEM public key as an HMAC secret (InvalidKeyError): the
    # mistake cannot be made with it, so nothing gets through.
    ("pyjwt", "hs256-public-key"): set(),
    ("jose", "hs256-public-key"): {"hs256-public-key"},
    ("golang-jwt", "hs256-public-key"): {"hs256-public-key"},
    ("pyjwt", "no-audience-check"): {"wrong-audience"},
    ("jose", "no-audience-check"): {"wrong-audience"},
    ("golang-jwt", "no-audience-check"): {"wrong-audience"},
    ("pyjwt", "no-exp-required"): {"missing-exp"},
    ("jose", "no-exp-required"): {"missing-exp"},
    ("golang-jwt", "no-exp-required"): {"missing-exp"},
    # The clock never consulted: exp-in-past and not-yet-valid get through;
    # `expired` is still refused, as its key is not in the JWKS.
    ("pyjwt", "no-time-check"): {"exp-in-past", "not-yet-valid"},
    ("jose", "no-time-check"): {"exp-in-past", "not-yet-valid"},
    ("golang-jwt", "no-time-check"): {"exp-in-past", "not-yet-valid"},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", required=True, help="the probe's --json output")
    parser.add_argument("--exit-code", type=int, required=True)
    parser.add_argument("--catalogue", required=True, help="GET /test-tokens")
    parser.add_argument("--route", required=True)
    parser.add_argument("--library", required=True)
    parser.add_argument("--mode", required=True)
    parser.add_argument("--label", required=True)
    args = parser.parse_args()
    name = f"probe: {args.label}"
    try:
        with open(args.catalogue) as f:
            offered = [d["name"] for d in json.load(f)["defects"] if args.route in d["endpoints"]]
        with open(args.probe) as f:
            report = json.load(f)
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"FAIL - {name}: no report ({type(err).__name__}: {err}; exit {args.exit_code})")
        return 1
    expected = EXPECTED[(args.library, args.mode)] & set(offered)
    rows = report.get("results", [])
    failed = {r["defect"] for r in rows if r.get("verdict") == "FAIL"}
    problems = []
    if [r["defect"] for r in rows] != ["none", *offered]:
        problems.append(f"rows {[r['defect'] for r in rows]} are not none + the catalogue {offered}")
    if failed != expected:
        problems.append(
            f"let through {sorted(failed)}, expected {sorted(expected)}"
            f" (missing {sorted(expected - failed)}, extra {sorted(failed - expected)})"
        )
    want_exit = 1 if expected else 0
    if args.exit_code != want_exit:
        problems.append(f"exit status {args.exit_code}, expected {want_exit}")
    if problems:
        print(f"FAIL - {name}: {'; '.join(problems)}")
        return 1
    what = f"flags exactly {', '.join(sorted(expected))}" if expected else "every defect refused"
    print(f"ok - {name}: {what} ({len(rows) - 1} defects, exit {args.exit_code})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
