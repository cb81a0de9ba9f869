from .cli import app

if __name__ == "__main__":  # not when a spawned process (a dask worker) re-imports the main module
    app(prog_name="disarm-tagger")
