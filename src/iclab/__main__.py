from iclab.cli import app

app(prog_name="iclab")
