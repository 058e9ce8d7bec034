-- The request benches/load.sh sends with wrk, and a count of answers whose
-- status is not the expected one: wrk itself counts only statuses >= 400 as
-- errors ("Non-2xx or 3xx responses"), so a 200 where a 304 was due, or any
-- other surprise, would otherwise pass unseen.
--
-- Environment:
--   WRK_METHOD         GET (default) or POST; a POST has an empty body
--                      (Content-Length: 0), as `curl -X POST` sends, unless
--                      WRK_BODY gives one
--   WRK_BODY           the body of every request
--   WRK_CONTENT_TYPE   its Content-Type
--   WRK_AUTHORIZATION  an Authorization header (e.g. Basic client credentials)
--   WRK_IF_NONE_MATCH  an entity tag to send as If-None-Match
--   WRK_EXPECT         the one status every answer must have (default 200)
--   WRK_STRICT         1 (default): check every status; 0: skip the check,
--                      which spares wrk from parsing every response

wrk.method = os.getenv("WRK_METHOD") or "GET"
if wrk.method == "POST" then
   wrk.body = os.getenv("WRK_BODY") or ""
end
local content_type = os.getenv("WRK_CONTENT_TYPE")
if content_type and content_type ~= "" then
   wrk.headers["Content-Type"] = content_type
end
local authorization = os.getenv("WRK_AUTHORIZATION")
if authorization and authorization ~= "" then
   wrk.headers["Authorization"] = authorization
end
local etag = os.getenv("WRK_IF_NONE_MATCH")
if etag and etag ~= "" then
   wrk.headers["If-None-Match"] = etag
end

local expect = tonumber(os.getenv("WRK_EXPECT") or "200")
local strict = (os.getenv("WRK_STRICT") or "1") ~= "0"
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   unexpected = 0
   if not strict then
      -- wrk parses answers only when `response` is set after init().
      response = nil
   end
end

function response(status, headers, body)
   if status ~= expect then
      unexpected = unexpected + 1
   end
end

function done(summary, latency, requests)
   local total = 0
   for _, thread in ipairs(threads) do
      total = total + (thread:get("unexpected") or 0)
   end
   io.write(string.format("Unexpected status: %d\n", total))
end
