"""The BullMQ / Bull queues in Redis: pause and resume (``pause``, with the Lua scripts in ``lua/``),
drain (``drain``), who paused them (``marker``), the rollback's hold (``hold``) and the application's
own admin endpoint (``admin_endpoint``)."""
