--[[
  Pause one queue, atomically, and remember that this migration did it.

  ARGV[1] migration id   ARGV[2] layout ("auto", "bullmq5", "bullmq6", "bull3")
  ARGV[3] "1" for a dry run   ARGV[4] Bull 3 pub/sub channel ("<prefix>:<name>:paused")

  Returns {action, layout, version, owner}; action is one of
  paused | would_pause | already_paused_by_us | already_paused | error (then layout holds the message).
]]
local layout, version = detectLayout(ARGV[2])
if layout == nil then
  return {"error", version, "", ""}
end

local owner = rcall("GET", KEYS[11]) or ""
if isPaused(layout) then
  if owner == ARGV[1] then
    return {"already_paused_by_us", layout, version, owner}
  end
  -- Paused before us (by a person, the app or another migration): not ours to resume later.
  return {"already_paused", layout, version, owner}
end

if ARGV[3] == "1" then
  return {"would_pause", layout, version, owner}
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
rcall("SET", KEYS[11], ARGV[1])
return {"paused", layout, version, ARGV[1]}
