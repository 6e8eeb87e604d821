--[[
  Read-only: where one queue's jobs are, and which active jobs have lost their lock.

  KEYS[1] meta   KEYS[2] wait   KEYS[3] paused   KEYS[4] active   KEYS[5] delayed
  KEYS[6] prioritized   KEYS[7] meta-paused (Bull 3)   KEYS[8] our paused-by marker
  ARGV[1] the queue's key prefix ("<prefix>:<name>:"); ARGV[2] most active jobs to check

  Returns {active, waiting, delayed, paused (0/1), paused-by, {active job ids without a lock}}.
]]
local rcall = redis.call
local function count(key)
  local t = rcall("TYPE", key)["ok"]
  if t == "list" then return rcall("LLEN", key) end
  if t == "zset" then return rcall("ZCARD", key) end
  return 0
end

local active = count(KEYS[4])
local waiting = count(KEYS[2]) + count(KEYS[3]) + count(KEYS[6])
local delayed = count(KEYS[5])
local paused = 0
if rcall("HEXISTS", KEYS[1], "paused") == 1 or rcall("EXISTS", KEYS[7]) == 1 then
  paused = 1
end

local orphaned = {}
if active > 0 and rcall("TYPE", KEYS[4])["ok"] == "list" then
  local ids = rcall("LRANGE", KEYS[4], 0, tonumber(ARGV[2]) - 1)
  for _, id in ipairs(ids) do
    if rcall("EXISTS", ARGV[1] .. id .. ":lock") == 0 then
      orphaned[#orphaned + 1] = id
    end
  end
end
return {active, waiting, delayed, paused, rcall("GET", KEYS[8]) or "", orphaned}
