"""The five clients of the contract (docs/API.md): id -> limite in cents. Each starts at
saldo 0; there is no client 6. The one place the tooling writes them down."""
LIMITS = {1: 100000, 2: 80000, 3: 1000000, 4: 10000000, 5: 500000}
