-- A cursor over KEYS and ARGV, for scripts that take repeated groups of arguments: each group is
-- read into named locals, in order, so no body computes an index.
-- KEYS     none of its own: take_keys(n) returns the script's next n KEYS
-- ARGV     none of its own: take_args(n) returns the script's next n ARGV; take_span(n) their first
--          and last index, for unpack(ARGV, take_span(n)) without a copy; args_left() counts the rest
-- Returns  (the functions) the next n values (nil past the end), a span's bounds, or how many ARGV are left.
local next_key, next_arg = 1, 1

local function take_keys(n)
  local first = next_key
  next_key = next_key + n
  return unpack(KEYS, first, next_key - 1)
end

local function take_args(n)
  local first = next_arg
  next_arg = next_arg + n
  return unpack(ARGV, first, next_arg - 1)
end

-- A run of arguments handed on whole (a record's fields): its bounds, so the caller unpacks ARGV
-- itself; copying it into a table first costs Redis about a microsecond per script call.
local function take_span(n)
  local first = next_arg
  next_arg = next_arg + n
  return first, next_arg - 1
end

local function args_left()
  return #ARGV - next_arg + 1
end
