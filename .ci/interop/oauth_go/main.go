// OAuth 2.0 interop in Go: golang.org/x/oauth2/clientcredentials gets an
// access token from a running jwks-server, with the client secret in HTTP
// Basic (x/oauth2 form-encodes id and secret as RFC 6749 §2.3.1 says) and in
// the form body. Built offline by .ci/interop.sh from Debian's Go packages.
//
//	INTEROP_CLIENT_SECRET=… oauth_go TOKEN_URL CLIENT_ID
//
// Prints one `ok - …` / `FAIL - …` line per auth style; exits 1 on any failure.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

func main() {
	tokenURL, clientID := os.Args[1], os.Args[2]
	secret := os.Getenv("INTEROP_CLIENT_SECRET")
	failed := false
	for _, style := range []struct {
		name  string
		style oauth2.AuthStyle
	}{{"client_secret_basic", oauth2.AuthStyleInHeader}, {"client_secret_post", oauth2.AuthStyleInParams}} {
		config := clientcredentials.Config{
			ClientID:     clientID,
			ClientSecret: secret,
			TokenURL:     tokenURL,
			Scopes:       []string{"read"},
			AuthStyle:    style.style,
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		token, err := config.Token(ctx)
		cancel()
		name := "Go golang.org/x/oauth2/clientcredentials Token(), " + style.name
		if err != nil {
			failed = true
			fmt.Printf("FAIL - %s: %v\n", name, err)
			continue
		}
		typ, err := headerTyp(token.AccessToken)
		if err != nil || typ != "at+jwt" || token.TokenType != "Bearer" {
			failed = true
			fmt.Printf("FAIL - %s: token_type %q, typ %q, %v\n", name, token.TokenType, typ, err)
			continue
		}
		fmt.Printf("ok - %s (token_type %s, typ %s, scope %v, expires in %ds)\n", name,
			token.TokenType, typ, token.Extra("scope"), int(time.Until(token.Expiry).Seconds()))
	}
	if failed {
		os.Exit(1)
	}
}

// headerTyp is the JOSE header's typ of a compact JWS.
func headerTyp(jwt string) (string, error) {
	header, err := base64.RawURLEncoding.DecodeString(strings.SplitN(jwt, ".", 2)[0])
	if err != nil {
		return "", err
	}
	var fields struct {
		Typ string `json:"typ"`
	}
	err = json.Unmarshal(header, &fields)
	return fields.Typ, err
}
