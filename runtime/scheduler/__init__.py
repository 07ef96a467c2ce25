"""Worker lifecycle: leases on models, loads on demand, the memory budget, queues, keep-alive and
eviction (scheduler.py), the worker processes (process.py) and the client that talks to them
(worker_client.py). The server's routes take a lease and relay the request themselves."""
