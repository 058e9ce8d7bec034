// OAuth 2.0 interop in node: openid-client (discovery + client credentials
// grant), oauth4webapi (clientCredentialsGrantRequest +
// processClientCredentialsResponse, and its RFC 9068 validateJwtAccessToken)
// and jose (jwtVerify with typ at+jwt against createRemoteJWKSet).
//
// Run by .ci/interop.sh from beside node_modules (it copies this file there):
//   INTEROP_CLIENT_SECRET=… node oauth_clients.mjs ISSUER CLIENT_ID AUDIENCE
// Prints one `ok - …` / `FAIL - …` line per check; exits 1 on any failure.
import * as client from 'openid-client';
import * as oauth from 'oauth4webapi';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [issuer, clientId, audience] = process.argv.slice(2);
const secret = process.env.INTEROP_CLIENT_SECRET;
let failed = 0;
const check = async (name, body) => {
  try {
    console.log(`ok - ${name} (${await body()})`);
  } catch (e) {
    failed++;
    console.log(`FAIL - ${name}: ${e.code ?? ''} ${e.message}${e.cause ? ` (${JSON.stringify(e.cause)})` : ''}`);
  }
};
const issuerUrl = new URL(issuer);
const tokens = {};

for (const [method, auth] of [
  ['client_secret_basic', client.ClientSecretBasic(secret)],
  ['client_secret_post', client.ClientSecretPost(secret)],
]) {
  await check(`openid-client discovery + clientCredentialsGrant, ${method}`, async () => {
    const config = await client.discovery(issuerUrl, clientId, undefined, auth, {
      execute: [client.allowInsecureRequests],
    });
    const answer = await client.clientCredentialsGrant(config, { scope: 'read' });
    if (answer.token_type.toLowerCase() !== 'bearer') throw new Error(`token_type ${answer.token_type}`);
    tokens[`openid-client ${method}`] = answer.access_token;
    return `expires_in ${answer.expires_in}, scope ${answer.scope}`;
  });
}

let as;
await check('oauth4webapi clientCredentialsGrantRequest + processClientCredentialsResponse, client_secret_basic', async () => {
  const options = { [oauth.allowInsecureRequests]: true };
  as = await oauth.processDiscoveryResponse(
    issuerUrl,
    await oauth.discoveryRequest(issuerUrl, { ...options, algorithm: 'oauth2' }),
  );
  const c = { client_id: clientId };
  const response = await oauth.clientCredentialsGrantRequest(
    as, c, oauth.ClientSecretBasic(secret), new URLSearchParams({ scope: 'read' }), options,
  );
  const answer = await oauth.processClientCredentialsResponse(as, c, response);
  tokens['oauth4webapi'] = answer.access_token;
  return `expires_in ${answer.expires_in}, scope ${answer.scope}`;
});

await check('oauth4webapi validateJwtAccessToken (RFC 9068) accepts the token', async () => {
  const request = new Request('http://resource.test/', {
    headers: { authorization: `Bearer ${tokens['oauth4webapi']}` },
  });
  const claims = await oauth.validateJwtAccessToken(as, request, audience, {
    [oauth.allowInsecureRequests]: true,
  });
  return `client_id ${claims.client_id}, scope ${claims.scope}`;
});

const jwks = createRemoteJWKSet(new URL(`${issuer}/.well-known/jwks.json`), { timeoutDuration: 10000 });
for (const [from, token] of Object.entries(tokens)) {
  await check(`jose jwtVerify {typ: 'at+jwt', issuer, audience} accepts the ${from} token`, async () => {
    const { payload, protectedHeader } = await jwtVerify(token, jwks, { typ: 'at+jwt', issuer, audience });
    if (payload.client_id !== clientId) throw new Error(`client_id ${payload.client_id}`);
    return `typ ${protectedHeader.typ}, kid ${protectedHeader.kid}`;
  });
}
process.exit(failed ? 1 : 0);
