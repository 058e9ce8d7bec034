// A protected endpoint that verifies bearer tokens with Go's golang-jwt
// (github.com/golang-jwt/jwt v4, Debian's golang-github-golang-jwt-jwt-dev),
// correctly or misconfigured the way real incidents came from, for
// `jwks-server probe`. Built offline by .ci/interop.sh (GOPATH mode,
// GOPROXY=off) from Debian's Go packages.
//
//	golang_jwt PORT JWKS_URL ISSUER AUDIENCE MODE [access-tokens]
//
// GET /protected with `Authorization: Bearer TOKEN` answers 200 when the
// token is accepted and 401 when it is refused. Modes:
//
//	correct             jwt.Parser with WithValidMethods, a Keyfunc that
//	                    finds the key by kid and pins its alg, and exp, iss
//	                    and aud required (v4's MapClaims.Valid checks exp only
//	                    when present, and checks neither iss nor aud).
//	no-signature-check  Parser.ParseUnverified, the claims checked as above.
//	hs256-public-key    no WithValidMethods, and a Keyfunc that hands HS256
//	                    tokens the RSA public key's PEM as the HMAC secret.
//	no-audience-check   aud not checked.
//	no-exp-required     exp checked only when present.
//	no-time-check       WithoutClaimsValidation (no exp, nbf or iat against
//	                    the clock), exp only required to be there.
//
// golang-jwt ignores the `crit` header, so every mode refuses one itself
// (RFC 7515 §4.1.11: no extension is understood here). With access-tokens,
// typ must be at+jwt (RFC 9068 §4).
package main

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"strings"
	"time"

	jwt "github.com/golang-jwt/jwt"
)

type jwk struct {
	Kty, Kid, Alg, Crv, N, E, X, Y string
}

var (
	jwksURL, issuer, audience, mode string
	accessTokens                    bool
	client                          = &http.Client{Timeout: 10 * time.Second}
)

func main() {
	if len(os.Args) < 6 {
		fmt.Fprintln(os.Stderr, "usage: golang_jwt PORT JWKS_URL ISSUER AUDIENCE MODE [access-tokens]")
		os.Exit(2)
	}
	port := os.Args[1]
	jwksURL, issuer, audience, mode = os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	accessTokens = len(os.Args) > 6 && os.Args[6] == "access-tokens"
	http.HandleFunc("/protected", func(w http.ResponseWriter, r *http.Request) {
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if token == "" || verify(token) != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	fmt.Printf("golang-jwt verifier (%s) on port %s\n", mode, port)
	if err := http.ListenAndServe("127.0.0.1:"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// keys fetches the published key set.
func keys() ([]jwk, error) {
	resp, err := client.Get(jwksURL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var set struct{ Keys []jwk }
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return nil, err
	}
	return set.Keys, nil
}

func b64(s string) []byte {
	b, _ := base64.RawURLEncoding.DecodeString(s)
	return b
}

func publicKey(k jwk) (interface{}, error) {
	switch k.Kty {
	case "RSA":
		return &rsa.PublicKey{N: new(big.Int).SetBytes(b64(k.N)), E: int(new(big.Int).SetBytes(b64(k.E)).Int64())}, nil
	case "EC":
		return &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(b64(k.X)), Y: new(big.Int).SetBytes(b64(k.Y))}, nil
	case "OKP":
		return ed25519.PublicKey(b64(k.X)), nil
	}
	return nil, fmt.Errorf("key type %q", k.Kty)
}

// byKid is the Keyfunc of a correct verifier: the kid must name a published
// key, and the token's alg must be that key's.
func byKid(token *jwt.Token) (interface{}, error) {
	kid, _ := token.Header["kid"].(string)
	if kid == "" {
		return nil, errors.New("no kid")
	}
	set, err := keys()
	if err != nil {
		return nil, err
	}
	for _, k := range set {
		if k.Kid == kid {
			if k.Alg != token.Method.Alg() {
				return nil, errors.New("alg is not the key's")
			}
			return publicKey(k)
		}
	}
	return nil, errors.New("unknown kid")
}

func verify(raw string) error {
	claims := jwt.MapClaims{}
	var token *jwt.Token
	var err error
	switch mode {
	case "no-signature-check":
		token, _, err = jwt.NewParser().ParseUnverified(raw, claims)
		if err == nil {
			err = claims.Valid()
		}
	case "hs256-public-key":
		// The service's "public key": whichever RSA key signs now.
		pems, perr := rsaPEMs()
		if perr != nil {
			return perr
		}
		for _, p := range pems {
			claims = jwt.MapClaims{}
			token, err = jwt.NewParser().ParseWithClaims(raw, claims, func(t *jwt.Token) (interface{}, error) {
				if _, ok := t.Method.(*jwt.SigningMethodHMAC); ok {
					return p, nil
				}
				return byKid(t)
			})
			if err == nil {
				break
			}
		}
	case "correct", "no-audience-check", "no-exp-required":
		token, err = jwt.NewParser(jwt.WithValidMethods([]string{"RS256", "PS256", "ES256", "EdDSA"})).
			ParseWithClaims(raw, claims, byKid)
	case "no-time-check":
		token, err = jwt.NewParser(jwt.WithValidMethods([]string{"RS256", "PS256", "ES256", "EdDSA"}),
			jwt.WithoutClaimsValidation()).ParseWithClaims(raw, claims, byKid)
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		return err
	}
	if _, ok := token.Header["crit"]; ok {
		return errors.New("crit: no extension is understood")
	}
	if typ, _ := token.Header["typ"].(string); accessTokens && !strings.EqualFold(typ, "at+jwt") && !strings.EqualFold(typ, "application/at+jwt") {
		return errors.New("typ is not at+jwt")
	}
	now := time.Now().Unix()
	if mode == "no-time-check" {
		if _, ok := claims["exp"]; !ok {
			return errors.New("exp")
		}
	} else if !claims.VerifyExpiresAt(now, mode != "no-exp-required") {
		return errors.New("exp")
	}
	if !claims.VerifyIssuer(issuer, true) {
		return errors.New("iss")
	}
	if mode != "no-audience-check" && !claims.VerifyAudience(audience, true) {
		return errors.New("aud")
	}
	return nil
}

// rsaPEMs are the published RSA keys as PEM (SubjectPublicKeyInfo), what
// such a service is configured with as "the public key".
func rsaPEMs() ([][]byte, error) {
	set, err := keys()
	if err != nil {
		return nil, err
	}
	var pems [][]byte
	for _, k := range set {
		if k.Kty == "RSA" {
			pub, _ := publicKey(k)
			der, err := x509.MarshalPKIXPublicKey(pub)
			if err != nil {
				return nil, err
			}
			pems = append(pems, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
		}
	}
	if len(pems) == 0 {
		return nil, errors.New("no RSA key")
	}
	return pems, nil
}
