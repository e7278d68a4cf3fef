"""Code shared by two or more stages. No Prefect, no DVC imports here."""
