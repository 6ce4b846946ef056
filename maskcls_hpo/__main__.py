from maskcls_hpo.cli import app

app()
