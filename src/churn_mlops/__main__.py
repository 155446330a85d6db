"""`python -m churn_mlops` is the `churn` command."""

from churn_mlops.cli import main

main()
