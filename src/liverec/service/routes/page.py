"""The live page (/) and the API docs (/docs), served from local files (no CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

PAGE = Path(__file__).resolve().parents[1] / "page"
router = APIRouter(include_in_schema=False)


def swagger_ui_dir() -> Path | None:
    """The Swagger UI files shipped by the ``swagger-ui-bundle-v2`` package, if installed."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    path = Path(str(swagger_ui_path))
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def docs_html(swagger: bool) -> str:
    """/docs: Swagger UI from local files, or (without the package) a plain list of the
    endpoints read from /openapi.json. No inline script: the CSP allows none."""
    assets = ('<link rel="stylesheet" href="/docs/assets/swagger-ui.css">\n'
              '<script src="/docs/assets/swagger-ui-bundle.js" defer></script>\n') if swagger else ""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<title>liverec API</title>\n<link rel="stylesheet" href="/static/docs.css">\n{assets}'
        '<script src="/static/docs.js" defer></script>\n</head>\n<body>\n'
        '<div id="swagger-ui"></div>\n'
        '<main id="plain-docs" class="plain-docs" hidden>\n<h1>liverec API</h1>\n'
        '<p>The OpenAPI document is at <a href="/openapi.json">/openapi.json</a>. '
        '(Install the <code>swagger-ui-bundle-v2</code> package for the interactive view.)</p>\n'
        '<ul id="endpoints"></ul>\n</main>\n</body>\n</html>\n'
    )


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(PAGE / "index.html")


def install(app: FastAPI) -> None:
    """The page and docs routes, and the static files they load."""
    swagger = swagger_ui_dir()
    html = docs_html(swagger is not None)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(html)

    app.include_router(router)
    if swagger is not None:
        app.mount("/docs/assets", StaticFiles(directory=swagger), name="swagger-ui")
    if PAGE.is_dir():
        app.mount("/static", StaticFiles(directory=PAGE), name="static")
