"""Scale-out: the control loop on PostgreSQL + CeleryExecutor (seeding, benchmark)."""
