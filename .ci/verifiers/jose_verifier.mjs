// A protected endpoint that verifies bearer tokens with the `jose` npm
// package, correctly or misconfigured the way real incidents came from, for
// `jwks-server probe`.
//
//   node jose_verifier.mjs PORT JWKS_URL ISSUER AUDIENCE MODE [access-tokens]
//
// GET /protected with `Authorization: Bearer TOKEN` answers 200 when the
// token is accepted and 401 when it is refused. Modes:
//
//   correct             createRemoteJWKSet + jwtVerify with issuer, audience
//                       and requiredClaims ['exp'] (jose pins each key's alg
//                       and refuses unknown `crit` extensions itself), and a
//                       kid required (see byKid).
//   no-signature-check  decodeJwt (no verification at all) and the claims
//                       checked by hand: jose has no switch to skip only the
//                       signature, so this is how the mistake is made with it.
//   hs256-public-key    a key function that, for HS256, hands jose the RSA
//                       public key's PEM as the HMAC secret.
//   no-audience-check   no `audience` option.
//   no-exp-required     no requiredClaims (jose checks exp only when present).
//   no-time-check       clockTolerance 3600000: an hour in milliseconds where
//                       jose reads seconds, so no time within 41 days is
//                       refused (jose has no switch to skip the clock).
//
// With `access-tokens`, typ must be at+jwt (RFC 9068 §4; jose's `typ` option).
// Copied beside node_modules by .ci/interop.sh so that `import 'jose'` resolves.
import http from 'node:http';
import { createRemoteJWKSet, jwtVerify, decodeJwt, decodeProtectedHeader, exportSPKI, importJWK } from 'jose';

const [port, jwksUrl, issuer, audience, mode, accessTokens] = process.argv.slice(2);
const JWKS = createRemoteJWKSet(new URL(jwksUrl), { timeoutDuration: 10000, cooldownDuration: 0 });
const typ = accessTokens === 'access-tokens' ? 'at+jwt' : undefined;
const ALGS = ['RS256', 'PS256', 'ES256', 'EdDSA'];

// The SubjectPublicKeyInfo PEM of every RSA key in the published set, as a
// .pem file holds it (exportSPKI leaves off the closing newline).
async function rsaPems() {
  const set = await (await fetch(jwksUrl)).json();
  const pems = [];
  for (const jwk of set.keys.filter((k) => k.kty === 'RSA')) {
    const pem = await exportSPKI(await importJWK({ ...jwk, alg: 'RS256' }, 'RS256', { extractable: true }));
    pems.push(pem.endsWith('\n') ? pem : `${pem}\n`);
  }
  return pems;
}

// createRemoteJWKSet uses the only key of a token's alg when the header has
// no kid, so a kid-less token verifies while the set holds one key per
// algorithm and fails once the next key is published. A verifier that means
// to find keys by kid says so.
const byKid = (header, token) => {
  if (!header.kid) throw new Error('no kid');
  return JWKS(header, token);
};

async function verify(token) {
  const options = { issuer, typ, clockTolerance: mode === 'no-time-check' ? 3600000 : 5 };
  if (mode !== 'no-audience-check') options.audience = audience;
  if (mode !== 'no-exp-required') options.requiredClaims = ['exp'];
  switch (mode) {
    case 'no-signature-check': {
      const header = decodeProtectedHeader(token);
      if (typ && String(header.typ).toLowerCase() !== typ) throw new Error('typ');
      const claims = decodeJwt(token);
      const now = Date.now() / 1000;
      if (typeof claims.exp !== 'number' || claims.exp < now - 5) throw new Error('exp');
      if (typeof claims.nbf === 'number' && claims.nbf > now + 5) throw new Error('nbf');
      if (claims.iss !== issuer) throw new Error('iss');
      const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
      if (!aud.includes(audience)) throw new Error('aud');
      return;
    }
    case 'hs256-public-key': {
      if (decodeProtectedHeader(token).alg === 'HS256') {
        for (const pem of await rsaPems()) {
          try {
            await jwtVerify(token, new TextEncoder().encode(pem), { ...options, algorithms: ['HS256'] });
            return;
          } catch { /* the next key */ }
        }
        throw new Error('no RSA key PEM verifies it');
      }
      await jwtVerify(token, byKid, { ...options, algorithms: ALGS });
      return;
    }
    default:
      await jwtVerify(token, byKid, { ...options, algorithms: ALGS });
  }
}

http.createServer(async (req, res) => {
  const auth = req.headers.authorization ?? '';
  let status = 401;
  if (req.url === '/protected' && auth.startsWith('Bearer ')) {
    try {
      await verify(auth.slice('Bearer '.length));
      status = 200;
    } catch {
      status = 401;
    }
  }
  res.writeHead(status, { 'content-length': '0' }).end();
}).listen(Number(port), '127.0.0.1', () => {
  console.log(`jose verifier (${mode}) on port ${port}`);
});
