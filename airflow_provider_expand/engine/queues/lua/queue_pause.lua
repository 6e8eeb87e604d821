--[[
  Pause one queue, atomically, and remember which run did it (and who holds it: the run or its rollback).

  ARGV[1] our marker (JSON {migration_id, run_id, holder})   ARGV[2] layout ("auto", "bullmq5",
  "bullmq6", "bull3")   ARGV[3] "1" for a dry run   ARGV[4] Bull 3 pub/sub channel ("<prefix>:<name>:paused")

  Returns {action, layout, version, marker}; action is one of paused | would_pause |
  already_paused_by_us | paused_by_earlier_run | already_paused | error (then layout holds the message).
  Only `paused` writes the marker; `already_paused_by_us` re-stamps it when the holder changes (the
  rollback taking over its own run's pause). A queue found paused under any other marker, or none, is
  left alone and no marker is written, so it is never ours to resume.
]]
local layout, version = detectLayout(ARGV[2])
if layout == nil then
  return {"error", version, "", ""}
end

local me = cjson.decode(ARGV[1])
local raw, owner = readMarker()
if isPaused(layout) then
  if sameRun(owner, me) then
    if owner.holder ~= me.holder and ARGV[3] ~= "1" then
      rcall("SET", KEYS[11], ARGV[1])
      raw = ARGV[1]
    end
    return {"already_paused_by_us", layout, version, raw}
  end
  if owner ~= nil and owner.migration_id == me.migration_id then
    -- An earlier run's marker: that run is over and never resumed it, and a person may have resumed
    -- and paused it since (BullMQ leaves no trace of who paused). Not ours to resume.
    return {"paused_by_earlier_run", layout, version, raw}
  end
  -- Paused before us (by a person, the app or another migration): not ours to resume later.
  return {"already_paused", layout, version, raw}
end

if ARGV[3] == "1" then
  return {"would_pause", layout, version, raw}
end

if layout == "bull3" then
  moveJobs(KEYS[2], KEYS[3], math.huge)
  rcall("SET", KEYS[6], 1)
  rcall("PUBLISH", ARGV[4], "paused")
else
  if layout == "bullmq5" then
    moveJobs(KEYS[2], KEYS[3], math.huge)
  end
  rcall("HSET", KEYS[1], "paused", 1)
  rcall("DEL", KEYS[4])
  rcall("XADD", KEYS[5], "*", "event", "paused")
end
-- Whatever marker lay on a queue that was running is stale (its run is over): ours replaces it.
rcall("SET", KEYS[11], ARGV[1])
return {"paused", layout, version, ARGV[1]}
