#!/usr/bin/env python3
"""OAuth 2.0 interop: third-party Python clients get access tokens from a
running jwks-server (`POST /oauth2/token`, client credentials) and check
them and its metadata the way their users would.

Run by .ci/interop.sh inside .venv-interop, against two replicas that share
one SQLite store and a --clients-file registering CLIENT_ID with the secret
in INTEROP_CLIENT_SECRET (it has `/ + : =` and a non-ASCII character):

    INTEROP_CLIENT_SECRET=… python .ci/interop/oauth_clients.py \
        --base-url URL --replica-url URL --client-id ID --audience AUD

Checks: Authlib `OAuth2Session.fetch_token` with client_secret_basic and
client_secret_post, Authlib's RFC 9068 `JWTBearerTokenValidator` on the
token, requests-oauthlib `BackendApplicationClient` + `fetch_token`,
Authlib's RFC 8414 `AuthorizationServerMetadata.validate()`, and Authlib's
revocation followed by introspection on the other replica. Prints one
`ok - ...` or `FAIL - ...` line per check; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import Any, Callable
from urllib.parse import quote_plus

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
from oauthlib.oauth2 import BackendApplicationClient
from requests_oauthlib import OAuth2Session as OAuthlibSession

HTTP_TIMEOUT = 10
FAILED = 0
# Plain http on loopback: both libraries refuse it without their switch.
os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"
os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
# Authlib's own migration notices (towards joserfc) are not findings.
warnings.filterwarnings("ignore", module="authlib")
warnings.filterwarnings("ignore", message=".*joserfc.*")


def check(name: str, body: Callable[[], str]) -> Any:
    global FAILED
    try:
        print(f"ok - {name} ({body()})", flush=True)
    except Exception as err:  # every failure is a check's result, not a crash
        FAILED += 1
        print(f"FAIL - {name}: {type(err).__name__}: {err}", flush=True)


def expect(condition: Any, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--replica-url", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--audience", required=True)
    args = parser.parse_args()
    secret = os.environ["INTEROP_CLIENT_SECRET"]
    client_id = args.client_id
    metadata = requests.get(
        f"{args.base_url}/.well-known/oauth-authorization-server", timeout=HTTP_TIMEOUT
    ).json()
    token_url = metadata["token_endpoint"]
    issuer = metadata["issuer"]
    tokens: dict[str, str] = {}

    # RFC 6749 §2.3.1: the id and secret are form-encoded before Basic.
    # Authlib and requests' HTTPBasicAuth send them raw (as latin-1), so an
    # application using them with such a secret hands them the encoded form.
    encoded_id, encoded_secret = quote_plus(client_id), quote_plus(secret)

    def authlib_fetch(method: str, secret_given: str) -> str:
        with OAuth2Session(
            encoded_id if method == "client_secret_basic" else client_id,
            secret_given,
            token_endpoint_auth_method=method,
            scope="read",
        ) as session:
            token = session.fetch_token(token_url, grant_type="client_credentials")
        expect(token.get("token_type") == "Bearer", f"token_type {token.get('token_type')}")
        expect(token.get("scope") == "read", f"scope {token.get('scope')}")
        tokens[method] = token["access_token"]
        return f"expires_in {token['expires_in']}, scope {token['scope']}"

    check(
        "Authlib OAuth2Session.fetch_token, client_secret_basic (secret form-encoded per RFC 6749 2.3.1)",
        lambda: authlib_fetch("client_secret_basic", encoded_secret),
    )
    check(
        "Authlib OAuth2Session.fetch_token, client_secret_post (the raw secret in the form)",
        lambda: authlib_fetch("client_secret_post", secret),
    )

    def raw_basic_is_refused() -> str:
        try:
            with OAuth2Session(
                client_id, secret, token_endpoint_auth_method="client_secret_basic"
            ) as session:
                session.fetch_token(token_url, grant_type="client_credentials")
        except Exception as err:  # Authlib's OAuthError carries the RFC code
            error = getattr(err, "error", None)
            expect(error in ("invalid_request", "invalid_client"), f"{type(err).__name__}: {err}")
            return f"{error}: {getattr(err, 'description', '')}"
        raise AssertionError("a token for a secret sent without RFC 6749 2.3.1 encoding")

    check(
        "Authlib client_secret_basic with the secret NOT form-encoded is refused, never 5xx",
        raw_basic_is_refused,
    )

    class Validator(JWTBearerTokenValidator):
        def get_jwks(self) -> dict:
            return requests.get(metadata["jwks_uri"], timeout=HTTP_TIMEOUT).json()

    def rfc9068(method: str) -> str:
        token = tokens[method]
        validator = Validator(issuer=issuer, resource_server=args.audience)
        claims = validator.authenticate_token(token)
        validator.validate_token(claims, scopes=["read"], request=None)
        expect(claims.header.get("typ") == "at+jwt", f"typ {claims.header.get('typ')}")
        expect(claims["client_id"] == client_id, f"client_id {claims['client_id']}")
        return f"typ at+jwt, alg {claims.header['alg']}, client_id {claims['client_id']}, aud {claims['aud']}"

    for method in ("client_secret_basic", "client_secret_post"):
        check(
            f"Authlib RFC 9068 JWTBearerTokenValidator accepts the {method} token",
            lambda method=method: rfc9068(method),
        )

    def requests_oauthlib(basic: bool) -> str:
        session = OAuthlibSession(client=BackendApplicationClient(client_id=client_id))
        if basic:
            token = session.fetch_token(
                token_url, client_id=encoded_id, client_secret=encoded_secret, timeout=HTTP_TIMEOUT
            )
        else:
            token = session.fetch_token(
                token_url, client_id=client_id, client_secret=secret,
                include_client_id=True, timeout=HTTP_TIMEOUT,
            )
        expect(token.get("token_type") == "Bearer", f"token_type {token.get('token_type')}")
        claims = Validator(issuer=issuer, resource_server=args.audience).authenticate_token(
            token["access_token"]
        )
        return f"expires_in {token['expires_in']}, verified, sub {claims['sub']}"

    check(
        "requests-oauthlib BackendApplicationClient fetch_token, HTTP Basic (secret form-encoded)",
        lambda: requests_oauthlib(True),
    )
    check(
        "requests-oauthlib BackendApplicationClient fetch_token, include_client_id (raw secret in the form)",
        lambda: requests_oauthlib(False),
    )

    class ClientCredentialsOnlyMetadata(AuthorizationServerMetadata):
        # RFC 8414 makes response_types_supported REQUIRED; with no
        # authorization endpoint the truth is an empty list, which Authlib's
        # own check refuses. Every other Authlib check runs as it is.
        def validate_response_types_supported(self) -> None:
            expect(self.get("response_types_supported") == [], "response_types_supported is []")

    def rfc8414() -> str:
        try:
            AuthorizationServerMetadata(metadata).validate()
        except ValueError as err:
            expect("response_types_supported" in str(err), f"refused for another reason: {err}")
        ClientCredentialsOnlyMetadata(metadata).validate()
        return "every check passes but Authlib's validate_response_types_supported, which refuses the empty list"

    check("Authlib AuthorizationServerMetadata.validate() on the RFC 8414 document", rfc8414)

    def revoke_then_inactive_on_replica() -> str:
        token = tokens["client_secret_post"]
        with OAuth2Session(
            client_id,
            secret,
            token_endpoint_auth_method="client_secret_post",
            revocation_endpoint_auth_method="client_secret_post",
        ) as s:
            introspected = s.introspect_token(
                metadata["introspection_endpoint"].replace(args.base_url, args.replica_url),
                token=token,
            ).json()
            expect(introspected.get("active") is True, f"before: {introspected}")
            response = s.revoke_token(metadata["revocation_endpoint"], token=token)
            expect(response.status_code == 200, f"revoke: {response.status_code} {response.text}")
            deadline = time.monotonic() + 15
            while True:
                introspected = s.introspect_token(
                    metadata["introspection_endpoint"].replace(args.base_url, args.replica_url),
                    token=token,
                ).json()
                if introspected == {"active": False}:
                    break
                expect(time.monotonic() < deadline, f"still {introspected} after 15 s")
                time.sleep(0.2)
        return "active on the replica, revoked on the first, then {\"active\": false} on the replica"

    check(
        "Authlib revoke_token, then introspect_token on the second replica says inactive",
        revoke_then_inactive_on_replica,
    )
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
