from callpipe.cli import app

app()
