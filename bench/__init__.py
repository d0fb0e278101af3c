"""wpfleet benchmarks (issue #5): `make bench` / `python -m bench`.

Runs against the lab with its own control database, owner label, web server
and worker clusters, so it never touches a panel or a test run beside it.
Results go to bench/results/ (latest.json, latest.md, PNG plots).
"""
