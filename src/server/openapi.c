/*
 * openapi.c - GET /openapi.json and GET /docs. Both are generated from the
 * route table (routes.c), so a route cannot exist undocumented: paths,
 * methods, path parameters, statuses and security come from the table;
 * only the request bodies and the shared schemas are written out here.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

static const char *reason(int code) {
    switch (code) {
    case 200: return "OK";
    case 202: return "Accepted: the job is queued (Location: /jobs/{id})";
    case 400: return "Bad request (invalid field, unknown model or source)";
    case 401: return "Missing or wrong API key";
    case 404: return "Not found";
    case 409: return "The job has no results yet";
    case 413: return "Payload too large";
    case 415: return "Unsupported media type";
    case 422: return "Undecodable or too long audio";
    case 429: return "Rate limited (Retry-After, RateLimit headers)";
    case 503: return "Unavailable: queue full, breaker open or shutting down (Retry-After)";
    default: return "Response";
    }
}

static cJSON *error_schema_ref(void) {
    cJSON *o = cJSON_CreateObject(), *c = cJSON_CreateObject(), *j = cJSON_CreateObject(),
          *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "$ref", "#/components/schemas/Error");
    cJSON_AddItemToObject(j, "schema", s);
    cJSON_AddItemToObject(c, "application/json", j);
    cJSON_AddItemToObject(o, "content", c);
    return o;
}

static cJSON *separate_body(void) {
    cJSON *rb = cJSON_Parse(
        "{\"required\":true,\"content\":{\"multipart/form-data\":{\"schema\":{\"type\":\"object\","
        "\"required\":[\"file\"],\"properties\":{"
        "\"file\":{\"type\":\"string\",\"format\":\"binary\",\"description\":\"audio in any format FFmpeg decodes\"},"
        "\"model_name\":{\"type\":\"string\",\"default\":\"htdemucs\"},"
        "\"two_stems\":{\"type\":\"string\",\"description\":\"a source of the model: writes it and no_<source>\"},"
        "\"format\":{\"type\":\"string\",\"enum\":[\"wav\",\"flac\",\"mp3\"],\"default\":\"wav\"},"
        "\"shifts\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":100,\"default\":0},"
        "\"overlap\":{\"type\":\"number\",\"minimum\":0,\"exclusiveMaximum\":1,\"default\":0.25},"
        "\"wait\":{\"type\":\"boolean\",\"description\":\"block until done (also a query parameter); "
        "with Accept: application/zip the answer is the stems as a zip\"}}}}}}");
    return rb;
}

static cJSON *alerts_body(void) {
    return cJSON_Parse(
        "{\"required\":true,\"content\":{\"application/json\":{\"schema\":{\"type\":\"object\","
        "\"required\":[\"alerts\"],\"description\":\"Alertmanager webhook payload (version 4)\","
        "\"properties\":{\"receiver\":{\"type\":\"string\"},\"status\":{\"type\":\"string\"},"
        "\"groupKey\":{\"type\":\"string\"},\"alerts\":{\"type\":\"array\",\"items\":{\"type\":\"object\","
        "\"required\":[\"status\",\"labels\"],\"properties\":{\"status\":{\"type\":\"string\","
        "\"enum\":[\"firing\",\"resolved\"]},\"labels\":{\"type\":\"object\",\"required\":[\"alertname\"],"
        "\"additionalProperties\":{\"type\":\"string\"}},\"annotations\":{\"type\":\"object\"},"
        "\"startsAt\":{\"type\":\"string\"},\"endsAt\":{\"type\":\"string\"},"
        "\"fingerprint\":{\"type\":\"string\"}}}}}}}}}");
}

static cJSON *build(void) {
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "openapi", "3.0.3");
    cJSON *info = cJSON_AddObjectToObject(doc, "info");
    cJSON_AddStringToObject(info, "title", "demix API");
    cJSON_AddStringToObject(info, "version", DEMIX_SERVER_VERSION);
    cJSON_AddStringToObject(info, "description",
                            "Music source separation (Demucs v4) as a service. Errors are "
                            "{\"error\": {\"code\", \"message\", \"request_id\"}}; every response "
                            "carries X-Request-ID. See docs/API.md.");
    cJSON *paths = cJSON_AddObjectToObject(doc, "paths");
    size_t n;
    const dmx_route_info *rt = dmx_routes(&n);
    for (size_t i = 0; i < n; i++) {
        cJSON *p = cJSON_GetObjectItemCaseSensitive(paths, rt[i].tmpl);
        if (!p) p = cJSON_AddObjectToObject(paths, rt[i].tmpl);
        char m[16];
        size_t k = 0;
        for (; rt[i].method[k] && k < sizeof m - 1; k++) m[k] = (char)(rt[i].method[k] | 0x20);
        m[k] = '\0';
        cJSON *op = cJSON_AddObjectToObject(p, m);
        cJSON_AddStringToObject(op, "summary", rt[i].summary);
        char opid[96];
        snprintf(opid, sizeof opid, "%s", m);
        for (const char *s = rt[i].tmpl; *s && strlen(opid) < sizeof opid - 2; s++) {
            size_t l = strlen(opid);
            opid[l] = (*s == '/' || *s == '{' || *s == '}' || *s == '.') ? '_' : *s;
            opid[l + 1] = '\0';
        }
        cJSON_AddStringToObject(op, "operationId", opid);
        if (strchr(rt[i].tmpl, '{')) {
            cJSON *params = cJSON_AddArrayToObject(op, "parameters");
            static const char *const pn[] = {"id", "stem"};
            for (int q = 0; q < 2; q++) {
                char t[16];
                snprintf(t, sizeof t, "{%s}", pn[q]);
                if (!strstr(rt[i].tmpl, t)) continue;
                cJSON *x = cJSON_CreateObject();
                cJSON_AddStringToObject(x, "name", pn[q]);
                cJSON_AddStringToObject(x, "in", "path");
                cJSON_AddBoolToObject(x, "required", 1);
                cJSON_AddItemToObject(x, "schema", cJSON_Parse("{\"type\":\"string\"}"));
                cJSON_AddItemToArray(params, x);
            }
        }
        if (!strcmp(rt[i].tmpl, "/jobs")) {
            cJSON *params = cJSON_AddArrayToObject(op, "parameters");
            cJSON_AddItemToArray(params, cJSON_Parse("{\"name\":\"limit\",\"in\":\"query\",\"schema\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000,\"default\":50}}"));
            cJSON_AddItemToArray(params, cJSON_Parse("{\"name\":\"offset\",\"in\":\"query\",\"schema\":{\"type\":\"integer\",\"minimum\":0,\"default\":0}}"));
        }
        if (!strcmp(rt[i].tmpl, "/separate")) cJSON_AddItemToObject(op, "requestBody", separate_body());
        if (!strcmp(rt[i].tmpl, "/alerts")) cJSON_AddItemToObject(op, "requestBody", alerts_body());
        if (rt[i].auth) cJSON_AddItemToObject(op, "security", cJSON_Parse("[{\"bearer\":[]}]"));
        cJSON *resp = cJSON_AddObjectToObject(op, "responses");
        char codes[64];
        snprintf(codes, sizeof codes, "%s", rt[i].responses);
        for (char *save = NULL, *t = strtok_r(codes, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
            int code = atoi(t);
            cJSON *r;
            if (code >= 400) {
                r = error_schema_ref();
            } else {
                r = cJSON_CreateObject();
                cJSON *ct = cJSON_AddObjectToObject(r, "content");
                cJSON_AddObjectToObject(ct, rt[i].produces);
            }
            cJSON_AddStringToObject(r, "description", reason(code));
            cJSON_AddItemToObject(resp, t, r);
        }
    }
    cJSON *comp = cJSON_AddObjectToObject(doc, "components");
    cJSON_AddItemToObject(
        comp, "schemas",
        cJSON_Parse("{\"Error\":{\"type\":\"object\",\"properties\":{\"error\":{\"type\":\"object\","
                    "\"properties\":{\"code\":{\"type\":\"string\"},\"message\":{\"type\":\"string\"},"
                    "\"request_id\":{\"type\":\"string\"}}}}}}"));
    cJSON_AddItemToObject(comp, "securitySchemes",
                          cJSON_Parse("{\"bearer\":{\"type\":\"http\",\"scheme\":\"bearer\","
                                      "\"description\":\"the DEMIX_API_KEY of the server\"}}"));
    return doc;
}

char *dmx_openapi_json(void) {
    cJSON *d = build();
    char *s = cJSON_Print(d);
    cJSON_Delete(d);
    return s;
}

/* ---- the HTML page ----------------------------------------------------------------- */


static void html_esc(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

char *dmx_openapi_html(void) {
    cJSON *d = build();
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f) {
        cJSON_Delete(d);
        return NULL;
    }
    const cJSON *info = cJSON_GetObjectItemCaseSensitive(d, "info");
    fputs("<!doctype html><html><head><meta charset=\"utf-8\"><title>demix API</title><style>"
          "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
          "h2{border-bottom:1px solid #ddd;padding-bottom:.3rem}code{background:#f3f3f3;padding:0 .2rem}"
          ".op{margin:1rem 0;padding:.6rem 1rem;border-left:4px solid #36c;background:#f8f9fc}"
          ".m{font-weight:bold;display:inline-block;min-width:4.5rem}.lock{color:#a60}"
          "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}"
          "</style></head><body><h1>demix API ", f);
    html_esc(f, cJSON_GetObjectItemCaseSensitive(info, "version")->valuestring);
    fputs("</h1><p>", f);
    html_esc(f, cJSON_GetObjectItemCaseSensitive(info, "description")->valuestring);
    fputs("</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3).</p>"
          "<h2>Routes</h2>", f);
    const cJSON *path;
    cJSON_ArrayForEach(path, cJSON_GetObjectItemCaseSensitive(d, "paths")) {
        const cJSON *op;
        cJSON_ArrayForEach(op, path) {
            fputs("<div class=\"op\"><span class=\"m\">", f);
            for (const char *m = op->string; *m; m++) fputc(*m & ~0x20, f);
            fputs("</span> <code>", f);
            html_esc(f, path->string);
            fputs("</code>", f);
            if (cJSON_GetObjectItemCaseSensitive(op, "security"))
                fputs(" <span class=\"lock\">(API key)</span>", f);
            fputs("<p>", f);
            html_esc(f, cJSON_GetObjectItemCaseSensitive(op, "summary")->valuestring);
            fputs("</p>", f);
            const cJSON *rb = cJSON_GetObjectItemCaseSensitive(op, "requestBody");
            if (rb) {
                const cJSON *ct = cJSON_GetObjectItemCaseSensitive(rb, "content")->child;
                const cJSON *props = cJSON_GetObjectItemCaseSensitive(
                    cJSON_GetObjectItemCaseSensitive(ct, "schema"), "properties");
                fputs("<p>Body: <code>", f);
                html_esc(f, ct->string);
                fputs("</code></p><table><tr><th>field</th><th>type</th><th>notes</th></tr>", f);
                const cJSON *pr;
                cJSON_ArrayForEach(pr, props) {
                    const cJSON *t = cJSON_GetObjectItemCaseSensitive(pr, "type");
                    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(pr, "description");
                    const cJSON *df = cJSON_GetObjectItemCaseSensitive(pr, "default");
                    fputs("<tr><td><code>", f);
                    html_esc(f, pr->string);
                    fputs("</code></td><td>", f);
                    html_esc(f, cJSON_IsString(t) ? t->valuestring : "");
                    fputs("</td><td>", f);
                    if (cJSON_IsString(ds)) html_esc(f, ds->valuestring);
                    if (df) {
                        char *v = cJSON_PrintUnformatted(df);
                        fputs(" default ", f);
                        if (v) html_esc(f, v);
                        free(v);
                    }
                    fputs("</td></tr>", f);
                }
                fputs("</table>", f);
            }
            fputs("<p>Responses: ", f);
            const cJSON *r;
            cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(op, "responses")) {
                fputs("<code>", f);
                html_esc(f, r->string);
                fputs("</code> ", f);
                html_esc(f, cJSON_GetObjectItemCaseSensitive(r, "description")->valuestring);
                fputs("; ", f);
            }
            fputs("</p></div>", f);
        }
    }
    fputs("</body></html>\n", f);
    fclose(f);
    cJSON_Delete(d);
    return out;
}
