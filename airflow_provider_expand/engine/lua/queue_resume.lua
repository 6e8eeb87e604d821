--[[
  Resume one queue, but only if this migration paused it (our marker, KEYS[11], holds its id).

  ARGV[1] migration id   ARGV[2] layout   ARGV[3] "1" on the first call of a resume, "0" on the
  calls that follow it to move the rest of a long paused list   ARGV[4] Bull 3 pub/sub channel
  ("<prefix>:<name>:resumed")   ARGV[5] most job ids to move back in this call

  Returns {action, layout, version, owner, remaining}; action is one of
  resumed | not_ours | already_resumed | error. While remaining > 0 the caller calls again with
  ARGV[3] = "0"; the marker is deleted with the last call, so an interrupted resume can be re-run.
]]
local owner = rcall("GET", KEYS[11]) or ""
if owner ~= ARGV[1] then
  return {"not_ours", "", "", owner, 0}
end

local layout, version = detectLayout(ARGV[2])
if layout == nil then
  return {"error", version, "", owner, 0}
end

local first = ARGV[3] == "1"
local action = "resumed"
if first and not isPaused(layout) then
  -- Somebody resumed it meanwhile (or our first call ran but its reply was lost): no event of ours,
  -- but any job ids still in the paused list are moved back all the same, as BullMQ 6 would.
  action = "already_resumed"
  first = false
end

local remaining = moveJobs(KEYS[3], KEYS[2], tonumber(ARGV[5]))

if layout == "bull3" then
  rcall("DEL", KEYS[6])
  if first then rcall("PUBLISH", ARGV[4], "resumed") end
else
  rcall("HDEL", KEYS[1], "paused")
  -- Wake blocked workers: a marker now if jobs wait, else at the next delayed job's time.
  if rcall("LLEN", KEYS[2]) + rcall("ZCARD", KEYS[10]) > 0 then
    rcall("ZADD", KEYS[4], 0, "0")
  else
    local nextDelayed = rcall("ZRANGE", KEYS[9], 0, 0, "WITHSCORES")
    if nextDelayed[2] ~= nil then
      rcall("ZADD", KEYS[4], math.floor(tonumber(nextDelayed[2]) / 0x1000), "1")
    end
  end
  if first then rcall("XADD", KEYS[5], "*", "event", "resumed") end
end

if remaining == 0 then
  rcall("DEL", KEYS[11])
end
return {action, layout, version, owner, remaining}
