"""Benchmarks: what fault tolerance costs and what it saves, against the alternatives, in one run.

`coserver bench [--quick] [--out DIR]` (and `make bench`) runs, on the
one-machine lab, seven sections, each in its own module:

  failover  kill -9 of the primary / the secondary QEMU with a client appending
            every 10 ms: client-visible gap, detection, promotion, acked writes lost;
  cost      the same guest workload unprotected (one QEMU) and protected (COLO pair),
            alternating, at several checkpoint periods;
  restart   the "clustering" alternative: disk replicated synchronously but no
            lock-step; kill the guest and boot it again on the survivor;
  sync      time to protect a 1 GiB disk against a raw copy over the same path;
  overhead  CPU used by the controllers of an idle protected pair;
  tls       (tlscost.py) the same protected pair in plain TCP and with TLS;
  protect   entering COLO with the guest's RAM in use, QEMU's stopped order against
            the live one, at 256 MiB and 1 GiB: the client's pause, the time to protect.

run.py drives them and writes bench.json (every raw figure), report.md and
PNG plots (report.py, plots.py). Nothing here passes or fails on a time: the
run fails only when a section could not be measured or an acked write of the
FT server was lost.
"""
