-- read_events runs for every event on its way to the sockets. PL/pgSQL plans its query with
-- the call's parameters ("custom" plans) and kept doing so on every call, since the generic
-- plan never looked cheaper to the planner: about 0.35 ms of planning per call, more than the
-- query itself (0.12-0.15 ms). The generic plan is the same index scan on events (project_id,
-- seq), so plan it once per connection. pgbench, one connection, one event per call: 0.50-0.55
-- -> 0.18-0.27 ms; 500 events per call: 6.4-9.7 -> 6.3-7.1 ms.
-- ALTER FUNCTION ... SET adds to the function's settings; SECURITY DEFINER and the pinned
-- search_path stay as they are.
ALTER FUNCTION synchub.read_events(uuid, bigint, integer) SET plan_cache_mode = force_generic_plan;
