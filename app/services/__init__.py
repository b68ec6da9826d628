"""Business rules, one module per domain. Each takes a UnitOfWork and never commits."""
