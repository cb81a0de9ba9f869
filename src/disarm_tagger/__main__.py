from .cli import app

app(prog_name="disarm-tagger")
