/*
 * openapi.c - GET /openapi.json and GET /docs. Both are generated from the
 * route table (routes.c), so a route cannot exist undocumented: paths,
 * methods, path parameters, statuses and security come from the table;
 * the request bodies, parameters and response schemas are written out here
 * (BODIES), with the defaults and bounds the handlers use (http.h), and a
 * route answering JSON without a schema here is a build-time-visible gap:
 * tests/web/openapi.mjs validates the document with a real OpenAPI 3.0.3
 * validator and real responses against these schemas.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "separate.h"

static const char *reason(int code) {
    switch (code) {
        case 200: return "OK";
        case 304: return "Not modified (ETag)";
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
    char *s = NULL;
    /* OpenAPI 3.0.3 (JSON Schema draft 5 there): exclusiveMaximum is a
     * boolean beside maximum. */
    if (asprintf(&s,
                 "{\"required\":true,\"content\":{\"multipart/"
                 "form-data\":{\"schema\":{\"type\":\"object\","
                 "\"required\":[\"file\"],\"properties\":{"
                 "\"file\":{\"type\":\"string\",\"format\":\"binary\",\"description\":\"audio in "
                 "any format FFmpeg decodes\"},"
                 "\"model_name\":{\"type\":\"string\",\"default\":\"%s\",\"description\":\"a name "
                 "of GET /models\"},"
                 "\"two_stems\":{\"type\":\"string\",\"description\":\"a source of the model: "
                 "writes it and no_<source>\"},"
                 "\"format\":{\"type\":\"string\",\"enum\":[\"wav\",\"flac\",\"mp3\"],\"default\":"
                 "\"%s\"},"
                 "\"shifts\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":%d,\"default\":%d},"
                 "\"overlap\":{\"type\":\"number\",\"minimum\":0,\"maximum\":1,"
                 "\"exclusiveMaximum\":true,\"default\":%g},"
                 "\"wait\":{\"type\":\"boolean\",\"default\":false,\"description\":\"block until "
                 "done (also a query parameter); "
                 "with Accept: application/zip the answer is the stems as a zip\"}}}}}}",
                 SRV_SEP_DEFAULT_MODEL, SRV_SEP_DEFAULT_FORMAT, SRV_SEP_MAX_SHIFTS,
                 SRV_SEP_DEFAULT_SHIFTS, SRV_SEP_DEFAULT_OVERLAP) < 0)
        return NULL;
    cJSON *rb = cJSON_Parse(s);
    free(s);
    return rb;
}

/* The JSON schema of each route's 2xx body (components/schemas), by method
 * and template; binary and text bodies are described by their type. */
static const struct {
    const char *method, *tmpl, *schema;
} BODIES[] = {
    {"GET", "/livez", "Status"},    {"GET", "/health", "Health"},
    {"GET", "/readyz", "Status"},   {"GET", "/models", "ModelList"},
    {"GET", "/openapi.json", NULL}, {"POST", "/alerts", "AlertsReceived"},
    {"POST", "/separate", "Job"},   {"GET", "/jobs", "JobList"},
    {"GET", "/jobs/{id}", "Job"},   {"DELETE", "/jobs/{id}", "Job"},
};

/* The 2xx content of route rt: a schema for JSON, a string otherwise. */
static cJSON *ok_content(const srv_route_info *rt) {
    cJSON *ct = cJSON_CreateObject(), *media = cJSON_AddObjectToObject(ct, rt->produces);
    const char *schema = NULL;
    int known = 0;
    for (size_t i = 0; i < sizeof BODIES / sizeof *BODIES; i++)
        if (!strcmp(BODIES[i].method, rt->method) && !strcmp(BODIES[i].tmpl, rt->tmpl))
            schema = BODIES[i].schema, known = 1;
    cJSON *sc = cJSON_AddObjectToObject(media, "schema");
    if (schema) {
        char ref[96];
        snprintf(ref, sizeof ref, "#/components/schemas/%s", schema);
        cJSON_AddStringToObject(sc, "$ref", ref);
    } else if (known || strcmp(rt->produces, "application/json")) {
        cJSON_AddStringToObject(sc, "type", known ? "object" : "string");
        if (!strncmp(rt->produces, "audio/", 6) || !strcmp(rt->produces, "application/zip") ||
            !strcmp(rt->produces, "*/*"))
            cJSON_AddStringToObject(sc, "format", "binary");
    }
    /* POST /separate with wait=true and Accept: application/zip. */
    if (!strcmp(rt->tmpl, "/separate"))
        cJSON_AddItemToObject(
            ct, "application/zip",
            cJSON_Parse("{\"schema\":{\"type\":\"string\",\"format\":\"binary\"}}"));
    return ct;
}

/* Shared schemas. Responses may carry more properties than listed (new
 * fields are additions); the listed ones are always there. */
static const char SCHEMAS[] =
    "{\"Error\":{\"type\":\"object\",\"required\":[\"error\"],\"properties\":{\"error\":{\"type\":"
    "\"object\","
    "\"required\":[\"code\",\"message\",\"request_id\"],\"properties\":{\"code\":{\"type\":"
    "\"string\"},"
    "\"message\":{\"type\":\"string\"},\"request_id\":{\"type\":\"string\"}}}}},"
    "\"Status\":{\"type\":\"object\",\"required\":[\"status\"],\"properties\":{\"status\":{"
    "\"type\":\"string\"}}},"
    "\"Health\":{\"type\":\"object\",\"required\":[\"status\",\"version\",\"uptime_seconds\","
    "\"models_loaded\","
    "\"queue_depth\",\"queue_capacity\",\"active_jobs\",\"workers\",\"circuit_breakers\"],"
    "\"properties\":{"
    "\"status\":{\"type\":\"string\",\"enum\":[\"ok\",\"degraded\"]},\"version\":{\"type\":"
    "\"string\"},"
    "\"uptime_seconds\":{\"type\":\"number\"},\"models_loaded\":{\"type\":\"integer\"},"
    "\"queue_depth\":{\"type\":\"integer\"},\"queue_capacity\":{\"type\":\"integer\"},"
    "\"active_jobs\":{\"type\":\"integer\"},\"workers\":{\"type\":\"integer\"},"
    "\"circuit_breakers\":{\"type\":\"object\",\"additionalProperties\":{\"type\":\"string\","
    "\"enum\":[\"closed\",\"open\",\"half_open\"]}},\"disk_free_bytes\":{\"type\":\"number\"}}},"
    "\"Model\":{\"type\":\"object\",\"required\":[\"name\",\"loaded\"],\"properties\":{"
    "\"name\":{\"type\":\"string\"},\"file\":{\"type\":\"string\"},\"source\":{\"type\":\"string\"}"
    ","
    "\"kind\":{\"type\":\"string\"},\"size_bytes\":{\"type\":\"number\"},\"loaded\":{\"type\":"
    "\"boolean\"}}},"
    "\"ModelList\":{\"type\":\"object\",\"required\":[\"models\"],\"properties\":{\"models\":{"
    "\"type\":\"array\","
    "\"items\":{\"$ref\":\"#/components/schemas/Model\"}}}},"
    "\"Stem\":{\"type\":\"object\",\"required\":[\"name\",\"url\"],\"properties\":{\"name\":{"
    "\"type\":\"string\"},"
    "\"url\":{\"type\":\"string\"}}},"
    "\"Job\":{\"type\":\"object\",\"required\":[\"id\",\"status\",\"progress\",\"model\","
    "\"format\",\"shifts\","
    "\"overlap\",\"stems\",\"error\"],\"properties\":{\"id\":{\"type\":\"string\"},"
    "\"status\":{\"type\":\"string\",\"enum\":[\"queued\",\"running\",\"done\",\"failed\","
    "\"cancelled\"]},"
    "\"progress\":{\"type\":\"number\",\"minimum\":0,\"maximum\":1},\"model\":{\"type\":\"string\"}"
    ","
    "\"two_stems\":{\"type\":\"string\",\"nullable\":true},\"format\":{\"type\":\"string\"},"
    "\"shifts\":{\"type\":\"integer\"},\"overlap\":{\"type\":\"number\"},\"filename\":{\"type\":"
    "\"string\"},"
    "\"file_size_bytes\":{\"type\":\"number\"},\"audio_seconds\":{\"type\":\"number\",\"nullable\":"
    "true},"
    "\"created_at\":{\"type\":\"string\",\"nullable\":true},\"started_at\":{\"type\":\"string\","
    "\"nullable\":true},"
    "\"finished_at\":{\"type\":\"string\",\"nullable\":true},\"eta_seconds\":{\"type\":\"number\","
    "\"nullable\":true},"
    "\"stems\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/Stem\"}},"
    "\"error\":{\"type\":\"object\",\"nullable\":true,\"required\":[\"code\",\"message\"],"
    "\"properties\":{"
    "\"code\":{\"type\":\"string\"},\"message\":{\"type\":\"string\"}}},"
    "\"deleted\":{\"type\":\"boolean\"}}},"
    "\"JobList\":{\"type\":\"object\",\"required\":[\"jobs\",\"total\",\"limit\",\"offset\"],"
    "\"properties\":{"
    "\"jobs\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/Job\"}},"
    "\"total\":{\"type\":\"integer\"},\"limit\":{\"type\":\"integer\"},\"offset\":{\"type\":"
    "\"integer\"}}},"
    "\"AlertsReceived\":{\"type\":\"object\",\"required\":[\"status\",\"received\"],\"properties\":"
    "{"
    "\"status\":{\"type\":\"string\"},\"received\":{\"type\":\"integer\"}}}}";

static cJSON *alerts_body(void) {
    return cJSON_Parse(
        "{\"required\":true,\"content\":{\"application/json\":{\"schema\":{\"type\":\"object\","
        "\"required\":[\"alerts\"],\"description\":\"Alertmanager webhook payload (version 4)\","
        "\"properties\":{\"receiver\":{\"type\":\"string\"},\"status\":{\"type\":\"string\"},"
        "\"groupKey\":{\"type\":\"string\"},\"alerts\":{\"type\":\"array\",\"items\":{\"type\":"
        "\"object\","
        "\"required\":[\"status\",\"labels\"],\"properties\":{\"status\":{\"type\":\"string\","
        "\"enum\":[\"firing\",\"resolved\"]},\"labels\":{\"type\":\"object\",\"required\":["
        "\"alertname\"],"
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
    const srv_route_info *rt = srv_routes(&n);
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
            char lim[200];
            snprintf(lim, sizeof lim,
                     "{\"name\":\"limit\",\"in\":\"query\",\"schema\":{\"type\":\"integer\","
                     "\"minimum\":1,\"maximum\":%d,\"default\":%d}}",
                     SRV_JOBS_MAX_LIMIT, SRV_JOBS_DEFAULT_LIMIT);
            cJSON_AddItemToArray(params, cJSON_Parse(lim));
            cJSON_AddItemToArray(params,
                                 cJSON_Parse("{\"name\":\"offset\",\"in\":\"query\",\"schema\":{"
                                             "\"type\":\"integer\",\"minimum\":0,\"default\":0}}"));
        }
        if (!strcmp(rt[i].tmpl, "/separate")) {
            cJSON *params = cJSON_AddArrayToObject(op, "parameters");
            cJSON_AddItemToArray(
                params, cJSON_Parse("{\"name\":\"wait\",\"in\":\"query\",\"description\":\"block "
                                    "until the job ends "
                                    "(as the form field): 200 with the job, or with Accept: "
                                    "application/zip its stems\","
                                    "\"schema\":{\"type\":\"boolean\",\"default\":false}}"));
        }
        if (!strcmp(rt[i].tmpl, "/separate"))
            cJSON_AddItemToObject(op, "requestBody", separate_body());
        if (!strcmp(rt[i].tmpl, "/alerts")) cJSON_AddItemToObject(op, "requestBody", alerts_body());
        if (rt[i].auth) cJSON_AddItemToObject(op, "security", cJSON_Parse("[{\"bearer\":[]}]"));
        cJSON *resp = cJSON_AddObjectToObject(op, "responses");
        char codes[64];
        snprintf(codes, sizeof codes, "%s", rt[i].responses);
        for (char *save = NULL, *t = strtok_r(codes, " ", &save); t;
             t = strtok_r(NULL, " ", &save)) {
            int code = atoi(t);
            cJSON *r;
            if (code >= 400) {
                r = error_schema_ref();
            } else if (code == 304) {
                r = cJSON_CreateObject(); /* no body */
            } else {
                r = cJSON_CreateObject();
                cJSON_AddItemToObject(r, "content", ok_content(&rt[i]));
            }
            cJSON_AddStringToObject(r, "description", reason(code));
            cJSON_AddItemToObject(resp, t, r);
        }
    }
    cJSON *comp = cJSON_AddObjectToObject(doc, "components");
    cJSON_AddItemToObject(comp, "schemas", cJSON_Parse(SCHEMAS));
    cJSON_AddItemToObject(comp, "securitySchemes",
                          cJSON_Parse("{\"bearer\":{\"type\":\"http\",\"scheme\":\"bearer\","
                                      "\"description\":\"the DEMIX_API_KEY of the server\"}}"));
    return doc;
}

char *srv_openapi_json(void) {
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

char *srv_openapi_html(void) {
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
          "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 "
          "1rem;color:#222}"
          "h2{border-bottom:1px solid #ddd;padding-bottom:.3rem}code{background:#f3f3f3;padding:0 "
          ".2rem}"
          ".op{margin:1rem 0;padding:.6rem 1rem;border-left:4px solid #36c;background:#f8f9fc}"
          ".m{font-weight:bold;display:inline-block;min-width:4.5rem}.lock{color:#a60}"
          "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem "
          ".5rem;text-align:left}"
          "</style></head><body><h1>demix API ",
          f);
    html_esc(f, cJSON_GetObjectItemCaseSensitive(info, "version")->valuestring);
    fputs("</h1><p>", f);
    html_esc(f, cJSON_GetObjectItemCaseSensitive(info, "description")->valuestring);
    fputs("</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3).</p>"
          "<h2>Routes</h2>",
          f);
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
