/*
 * web.c - serves the embedded web page (web/): GET / is index.html, GET
 * /static/{name} any other file, with its Content-Type, a strong ETag
 * (304 on If-None-Match) and Cache-Control. index.html is revalidated on
 * every load (no-cache) so a new binary's page shows at once; the other
 * files are referenced from it and revalidated too, cheaply via the ETag.
 */
#include <string.h>
#include <strings.h>

#include "web.h"

const srv_web_asset *srv_web_find(const char *name) {
    for (size_t i = 0; i < srv_web_n_assets; i++)
        if (!strcmp(srv_web_assets[i].name, name)) return &srv_web_assets[i];
    return NULL;
}

static const char *content_type(const char *name) {
    static const struct {
        const char *ext, *type;
    } T[] = {
        {".html", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".json", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
        {".webmanifest", "application/manifest+json"},
    };
    const char *dot = strrchr(name, '.');
    if (dot)
        for (size_t i = 0; i < sizeof T / sizeof *T; i++)
            if (!strcasecmp(dot, T[i].ext)) return T[i].type;
    return "application/octet-stream";
}

/* 1 if the If-None-Match header lists the asset's ETag (or is "*"). */
static int not_modified(struct MHD_Connection *c, const srv_web_asset *a) {
    const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match");
    if (!inm) return 0;
    if (!strcmp(inm, "*")) return 1;
    size_t n = strlen(a->etag);
    for (const char *p = strstr(inm, a->etag); p; p = strstr(p + 1, a->etag)) {
        char after = p[n];
        if (after == '\0' || after == ',' || after == ' ') return 1;
    }
    return 0;
}

static enum MHD_Result send_asset(struct MHD_Connection *c, srv_req *r, const srv_web_asset *a) {
    int nm = not_modified(c, a);
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        nm ? 0 : a->size, nm ? NULL : (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", content_type(a->name));
    MHD_add_response_header(resp, "ETag", a->etag);
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (!strcmp(a->name, "index.html")) {
        /* Everything the page loads is its own: no CDN, no inline script. */
        MHD_add_response_header(resp, "Content-Security-Policy",
                                "default-src 'self'; img-src 'self' data: blob:; "
                                "media-src 'self' blob:; connect-src 'self'; "
                                "style-src 'self'; script-src 'self'; object-src 'none'; "
                                "base-uri 'none'; frame-ancestors 'none'");
        MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    }
    return srv_respond(c, r, nm ? 304 : 200, resp, nm ? 0 : (int64_t)a->size);
}

enum MHD_Result srv_web_index(struct MHD_Connection *c, srv_req *r, const char *upload,
                              size_t *upload_size) {
    (void)upload;
    (void)upload_size;
    const srv_web_asset *a = srv_web_find("index.html");
    if (!a) return srv_respond_error(c, r, "not_found", "this build has no web page");
    return send_asset(c, r, a);
}

enum MHD_Result srv_web_static(struct MHD_Connection *c, srv_req *r, const char *upload,
                               size_t *upload_size) {
    (void)upload;
    (void)upload_size;
    const srv_web_asset *a = srv_web_find(r->stem);
    if (!a) return srv_respond_error(c, r, "not_found", "no static file '%s'", r->stem);
    return send_asset(c, r, a);
}
