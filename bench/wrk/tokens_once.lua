-- Presents each token of $TOKENS once (connections share the thread's
-- cursor), then stops the thread: fills the credential cache.
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local i, answered = 0, 0
request = function()
  i = math.min(i + 1, #tokens)
  return wrk.format("GET", "/api/bench", { ["Authorization"] = "Bearer " .. tokens[i] })
end
response = function(status, headers, body)
  answered = answered + 1
  if answered >= #tokens then wrk.thread:stop() end
end
dofile(os.getenv("BENCH_DIR") .. "/wrk/summary.lua")
