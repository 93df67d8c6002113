"""Applications built on the query engine, kept beside it (the engine never imports them):

    sql/      rewrite SQL queries with demonstrations retrieved from a pool of verified rewrites (PostgreSQL)
    service/  the HTTP search service (FastAPI)
"""
