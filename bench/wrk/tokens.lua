-- Feeds a different bearer token to every request, round-robin over the
-- file in $TOKENS (one JWT a line), so the credential cache cannot help.
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local i = math.random(#tokens)
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/api/bench", { ["Authorization"] = "Bearer " .. tokens[i] })
end
dofile(os.getenv("BENCH_DIR") .. "/wrk/summary.lua")
