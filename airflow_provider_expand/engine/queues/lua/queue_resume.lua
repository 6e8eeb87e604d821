--[[
  Resume one queue, but only if this run paused it and the caller is its holder (KEYS[11], the marker).

  ARGV[1] our marker (JSON {migration_id, run_id, holder})   ARGV[2] layout   ARGV[3] "1" on the first
  call of a resume, "0" on the calls that follow it to move the rest of a long paused list   ARGV[4]
  Bull 3 pub/sub channel ("<prefix>:<name>:resumed")   ARGV[5] most job ids to move back in this call

  Returns {action, layout, version, marker, remaining}; action is one of
  resumed | already_resumed | not_ours | held_by_rollback | error. While remaining > 0 the caller calls
  again with ARGV[3] = "0"; the marker is deleted with the last call, so an interrupted resume can be
  re-run, and a finished one leaves no marker for a later run to trip over.
]]
local me = cjson.decode(ARGV[1])
local raw, owner = readMarker()
if not sameRun(owner, me) then
  return {"not_ours", "", "", raw, 0}
end
if owner.holder ~= me.holder then
  -- The rollback re-stamped the pause: only the rollback resumes it, after the container swap.
  if owner.holder == "rollback" then return {"held_by_rollback", "", "", raw, 0} end
  return {"not_ours", "", "", raw, 0}
end

local layout, version = detectLayout(ARGV[2])
if layout == nil then
  return {"error", version, "", raw, 0}
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
return {action, layout, version, raw, remaining}
