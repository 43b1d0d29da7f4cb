-- POST /enqueue-task with a fixed body (the same load as the BullMQ peer's harness);
-- prints one WRKJSON line with the totals. No response() callback: it would slow wrk.
wrk.method = "POST"
wrk.body = '{"jobName":"noop","data":{"n":1}}'
wrk.headers["Content-Type"] = "application/json"

-- WRK_LIMIT=n (bench/fleet.py): each thread sends n requests, then nothing (an empty request)
-- until wrk is stopped (SIGINT). Without it there is no request() callback, so wrk sends its
-- one prepared request as fast as it can.
local limit = tonumber(os.getenv("WRK_LIMIT") or "")
if limit then
  local sent = 0
  request = function()
    sent = sent + 1
    if sent > limit then return "" end
    return wrk.format()
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d},"latency_us":{"p50":%d,"p99":%d,"max":%d}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
