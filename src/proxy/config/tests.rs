use super::*;

const GOOD: &str = "\
listen: 127.0.0.1:9999
upstream: https://api.openai.com
domain: ask-ai
descriptors:
  - [{key: client, value: \"{client}\"}]
  - [{key: route, value: \"{route}\"}, {key: model, value: \"{model}\"}]
routes: [/v1/chat/completions, POST /v1/responses, \"GET /v1/models/{model}\"]
trusted_proxies: [10.0.0.0/8, 192.0.2.1]
cors: {allowed_origins: [chrome-extension://abcdefghijklmnop]}
models: [gpt-4o-mini]
max_output_tokens: 1024
tokens:
  descriptors:
    - [{key: client_tokens, value: \"{client}\"}]
";

fn errors(text: &str) -> Vec<String> {
    match parse_proxy_config("proxy.yaml", text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_full_file_reads_with_defaults_for_the_rest() {
    let config = parse_proxy_config("proxy.yaml", GOOD).unwrap();
    assert_eq!(config.listen.port(), 9999);
    assert_eq!(config.domain, "ask-ai");
    assert_eq!(config.api_key_env, "OPENAI_API_KEY");
    assert_eq!(config.routes.len(), 3);
    assert_eq!(config.routes[0].method, axum::http::Method::POST);
    assert_eq!(config.trusted_proxies.len(), 2);
    assert_eq!(config.on_limiter_error, OnLimiterError::Deny);
    assert_eq!(config.limiter_timeout, Duration::from_millis(50));
    assert_eq!(config.max_body_bytes, 2 << 20);
    assert!(config.enabled && !config.allow_store && config.safety_identifier);
    let vars = Vars {
        client: "203.0.113.7",
        ip: "203.0.113.7",
        route: "/v1/chat/completions",
        model: "gpt-4o-mini",
    };
    let second = &config.descriptors[1].entries;
    assert_eq!(second[1].1.fill(&vars), "gpt-4o-mini");
    assert_eq!(config.tokens.unwrap().bytes_per_token, 1);
}

#[test]
fn the_routes_default_to_the_model_calls() {
    let text = GOOD.replace(
        "routes: [/v1/chat/completions, POST /v1/responses, \"GET /v1/models/{model}\"]\n",
        "",
    );
    let config = parse_proxy_config("proxy.yaml", &text).unwrap();
    let routes: Vec<String> = config
        .routes
        .iter()
        .map(|r| format!("{} {}", r.method, r.pattern))
        .collect();
    assert_eq!(
        routes,
        [
            "POST /v1/chat/completions",
            "POST /v1/responses",
            "POST /v1/embeddings",
            "GET /v1/models"
        ]
    );
}

#[test]
fn every_problem_is_reported_at_its_line() {
    let text = "\
upstream: ftp://example.com
domain: ask-ai
descriptors:
  - [{key: client, value: \"{clinet}\"}]
routes: [/v1/files]
trusted_proxies: [10.0.0.0/33]
on_limiter_error: maybe
max_body_byte: 10
";
    let found = errors(text);
    let want = [
        "proxy.yaml:1:11: 'upstream' must be an http(s) URL",
        "proxy.yaml:4:27: unknown placeholder '{clinet}'",
        "proxy.yaml:5:10: route '/v1/files': give the method too",
        "proxy.yaml:6:19: '10.0.0.0/33' is not an address or a CIDR",
        "proxy.yaml:7:19: 'on_limiter_error' must be deny or allow",
        "proxy.yaml:8:1: unknown key 'max_body_byte' in the proxy config",
    ];
    assert_eq!(found.len(), want.len(), "{found:#?}");
    for (found, want) in found.iter().zip(want) {
        assert!(
            found.starts_with(want),
            "{found} does not start with {want}"
        );
    }
}

#[test]
fn settings_that_would_leave_a_hole_are_refused() {
    let token_only =
        GOOD.replace("max_output_tokens: 1024\n", "") + "client_token_header: x-install-id\n";
    let found = errors(&token_only);
    assert!(
        found.iter().any(|e| e.contains("rotate tokens")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|e| e.contains("needs 'max_output_tokens'")),
        "{found:#?}"
    );

    let any_origin = GOOD.replace("chrome-extension://abcdefghijklmnop", "\"*\"");
    assert!(errors(&any_origin)[0].contains("any page"));

    let any_model = GOOD.replace("models: [gpt-4o-mini]\n", "");
    assert!(errors(&any_model)[0].contains("needs a 'models' list"));

    let no_descriptors = "upstream: http://127.0.0.1:1\ndomain: d\n";
    assert!(errors(no_descriptors)[0].contains("nothing would be limited"));

    let with_key = GOOD.replace("https://api.openai.com", "https://sk:secret@api.openai.com");
    assert!(errors(&with_key)[0].contains("credentials"));
}

#[test]
fn a_missing_file_names_itself() {
    let error = load_proxy_config(Path::new("/nonexistent/proxy.yaml")).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/proxy.yaml: cannot read"),
        "{error}"
    );
}

#[test]
fn routes_that_read_the_whole_account_must_be_asked_for() {
    let listing = GOOD.replace("POST /v1/responses", "GET /v1/chat/completions");
    let found = errors(&listing);
    assert!(
        found[0].contains("'GET /v1/chat/completions' is not a model call"),
        "{found:#?}"
    );
    for route in [
        "\"GET /v1/responses/{id}\"",
        "POST /v1/files",
        "\"DELETE /v1/models/{model}\"",
        "\"POST /v1/{kind}\"",
        "POST /v1/realtime/sessions",
        "\"POST /v1/responses/{id}/cancel\"",
    ] {
        let text = GOOD.replace("POST /v1/responses", route);
        assert!(errors(&text)[0].contains("allow_account_routes"), "{route}");
    }
    let allowed = listing + "allow_account_routes: true\n";
    assert!(parse_proxy_config("proxy.yaml", &allowed).is_ok());
    let moderation = GOOD.replace("POST /v1/responses", "POST /v1/moderations");
    assert!(errors(&moderation)[0].contains("no token accounting"));
}

#[test]
fn an_upstream_ca_file_must_hold_certificates() {
    let missing = GOOD.to_owned() + "upstream_ca_file: /nonexistent/ca.pem\n";
    let found = errors(&missing);
    assert!(
        found[0].starts_with("proxy.yaml:15:19: cannot read '/nonexistent/ca.pem'"),
        "{found:#?}"
    );
    let path = std::env::temp_dir().join(format!("tollgate-not-pem-{}.pem", std::process::id()));
    std::fs::write(&path, "not a certificate\n").unwrap();
    let empty = GOOD.to_owned() + &format!("upstream_ca_file: {}\n", path.display());
    assert!(
        errors(&empty)[0].contains("holds no certificate"),
        "{:#?}",
        errors(&empty)
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn the_domain_must_be_in_the_rate_limit_config() {
    let config = parse_proxy_config("proxy.yaml", GOOD).unwrap();
    let rules = |yaml: &str| {
        let sources = [("limits.yaml".to_owned(), yaml.to_owned())];
        crate::config::load::load_sources(&sources, &Default::default()).unwrap()
    };
    assert_eq!(config.check_domain(&rules("domain: ask-ai\n")), Ok(()));
    let missing = config.check_domain(&rules("domain: other\n")).unwrap_err();
    assert_eq!(
        missing.to_string(),
        "the proxy's domain 'ask-ai' is not in the rate-limit config: it would limit nothing"
    );
}

#[test]
fn a_leading_byte_order_mark_is_not_part_of_the_file() {
    let config = parse_proxy_config("proxy.yaml", &format!("\u{feff}{GOOD}")).unwrap();
    assert_eq!(config.listen.port(), 9999);
    assert_eq!(config.domain, "ask-ai");
}

#[test]
fn a_byte_order_mark_in_a_file_on_disk_is_skipped_too() {
    let path = std::env::temp_dir().join(format!("tollgate-bom-{}.yaml", std::process::id()));
    std::fs::write(&path, format!("\u{feff}{GOOD}")).unwrap();
    let loaded = load_proxy_config(&path);
    let _ = std::fs::remove_file(&path);
    assert_eq!(loaded.unwrap().domain, "ask-ai");
}

#[test]
fn a_second_yaml_document_is_refused_not_ignored() {
    let text = format!("{GOOD}---\ndomain: other\n");
    // Reported where the second document's content starts, after its `---`.
    let line = text.lines().count();
    assert_eq!(
        errors(&text),
        [format!(
            "proxy.yaml:{line}:1: a second YAML document: the proxy config is one document"
        )]
    );
}

#[test]
fn an_empty_file_or_invalid_yaml_is_refused() {
    assert_eq!(
        errors(""),
        ["proxy.yaml:1:1: no YAML document: expected a mapping"]
    );
    let invalid = errors("domain: [ask-ai\n");
    assert!(invalid[0].contains("invalid YAML"), "{invalid:?}");
}

#[test]
fn without_listen_the_proxy_listens_on_the_default() {
    let text = GOOD.replace("listen: 127.0.0.1:9999\n", "");
    let config = parse_proxy_config("proxy.yaml", &text).unwrap();
    assert_eq!(config.listen, DEFAULT_LISTEN);
    assert_eq!(config.listen.to_string(), "127.0.0.1:8090");
    assert_eq!(
        errors(&GOOD.replace("127.0.0.1:9999", "nowhere")),
        ["proxy.yaml:1:9: 'listen' must be an address such as 127.0.0.1:8090, found 'nowhere'"]
    );
}
