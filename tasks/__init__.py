"""Pipeline stages: one module per stage, pure batch functions plus one thin Prefect task each."""
