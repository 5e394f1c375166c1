"""The contract's clients and load (docs/API.md), the one place the tooling writes them down:
LIMITS, the five clients (id -> limite in cents; each starts at saldo 0; there is no client 6);
RATES, the new requests per second the official load test's open phase ramps up to and holds,
per kind (d: debits, c: credits, e: statements); crebitos.js gets both from loadrun.py."""
LIMITS = {1: 100000, 2: 80000, 3: 1000000, 4: 10000000, 5: 500000}
RATES = {"d": 220, "c": 110, "e": 10}
