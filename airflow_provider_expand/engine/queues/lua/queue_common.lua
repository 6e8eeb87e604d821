--[[
  Shared by queue_pause.lua and queue_resume.lua (prepended by engine/queues/pause.py).
  Written for airflow-provider-expand after reading BullMQ 5/6 pause-7.lua and Bull's pause scripts;
  it changes a queue's state the way they do, and nothing else.

  KEYS[1] meta        KEYS[2] wait      KEYS[3] paused      KEYS[4] marker
  KEYS[5] events      KEYS[6] meta-paused (Bull 3)          KEYS[7] id
  KEYS[8] active      KEYS[9] delayed   KEYS[10] prioritized
  KEYS[11] the paused-by marker: JSON {migration_id, run_id, holder} of the run that paused this queue
]]
local rcall = redis.call
local CHUNK = 5000 -- list items moved per RPUSH: bounded, so unpack() stays well inside Lua's stack

-- Which layout the queue has: from meta.version, else from the keys present. Returns layout, version
-- or nil, message.
local function detectLayout(forced)
  local version = rcall("HGET", KEYS[1], "version")
  if forced ~= "auto" then
    return forced, version or ""
  end
  if version then
    local lib, major = string.match(version, "^([^:]+):(%d+)%.")
    if lib == "bullmq" and major ~= nil then
      major = tonumber(major)
      if major >= 6 then return "bullmq6", version end
      if major == 5 then return "bullmq5", version end
    end
    return nil, "meta.version is '" .. version .. "': only BullMQ 5, BullMQ 6 and Bull 3 layouts are known"
  end
  if rcall("EXISTS", KEYS[5], KEYS[4]) > 0 then
    return nil, "BullMQ keys (events, marker) but no meta.version: cannot tell BullMQ 5 from 6"
  end
  if rcall("EXISTS", KEYS[6], KEYS[7], KEYS[2], KEYS[3], KEYS[8], KEYS[9]) > 0 then
    return "bull3", ""
  end
  return nil, "no such queue: none of its keys (meta, id, wait, paused, active, delayed) exist"
end

local function isPaused(layout)
  if layout == "bull3" then
    return rcall("EXISTS", KEYS[6]) == 1
  end
  return rcall("HEXISTS", KEYS[1], "paused") == 1
end

-- Move up to `limit` job ids from list src to the consuming end of list dst (order kept); a plain
-- RENAME when dst does not exist. Returns how many are left in src.
local function moveJobs(src, dst, limit)
  if rcall("EXISTS", src) == 0 then return 0 end
  if rcall("EXISTS", dst) == 0 then
    rcall("RENAME", src, dst)
    return 0
  end
  local moved = 0
  while moved < limit do
    local jobs = rcall("LRANGE", src, 0, math.min(CHUNK, limit - moved) - 1)
    if #jobs == 0 then break end
    rcall("RPUSH", dst, unpack(jobs))
    rcall("LTRIM", src, #jobs, -1)
    moved = moved + #jobs
  end
  return rcall("LLEN", src)
end

-- The paused-by marker as {raw, table}; raw is "" without one. A marker that is not JSON (the first
-- release wrote the bare migration id) has no run: it never matches, so it resumes nothing.
local function readMarker()
  local raw = rcall("GET", KEYS[11])
  if not raw then return "", nil end
  local ok, m = pcall(cjson.decode, raw)
  if ok and type(m) == "table" and m.migration_id ~= nil then return raw, m end
  return raw, {migration_id = raw, run_id = false, holder = "run"}
end

local function sameRun(m, me)
  return m ~= nil and m.migration_id == me.migration_id and m.run_id == me.run_id
end
