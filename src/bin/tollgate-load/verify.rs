//! Checking every answer: a benchmark that counts wrong answers as fast ones measures nothing.

use clap::ValueEnum;

use tollgate::proto::RateLimitResponse;
use tollgate::proto::rate_limit_response::Code;

/// Which decisions a run accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Expect {
    /// Every call must be OK (the bench configs have huge limits).
    Ok,
    /// Every call must be OVER_LIMIT.
    Over,
    /// OK and OVER_LIMIT are both fine.
    Any,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Ok,
    OverLimit,
}

/// Why an answer was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("gRPC status {code:?}: {message}")]
    Grpc { code: tonic::Code, message: String },
    #[error("overall_code is {0} (UNKNOWN or not a Code): never a valid decision")]
    OverallCode(i32),
    #[error("{got} statuses for {want} descriptors")]
    StatusCount { got: usize, want: usize },
    #[error("status {index} has code {code} (UNKNOWN or not a Code)")]
    StatusCode { index: usize, code: i32 },
    #[error("status {index} has no current_limit: no rule matched (wrong domain or config?)")]
    NoLimit { index: usize },
    #[error("answered {got:?}, expected {want:?}")]
    Unexpected { got: Answer, want: Expect },
}

impl Failure {
    /// A short, low-cardinality name to count failures by.
    pub fn kind(&self) -> String {
        match self {
            Failure::Grpc { code, .. } => format!("grpc {code:?}"),
            Failure::OverallCode(_) => "invalid overall_code".into(),
            Failure::StatusCount { .. } => "statuses count != descriptors count".into(),
            Failure::StatusCode { .. } => "invalid status code".into(),
            Failure::NoLimit { .. } => "status without current_limit".into(),
            Failure::Unexpected { got, .. } => format!("unexpected {got:?}"),
        }
    }
}

/// What is checked of each answer.
#[derive(Clone, Copy, Debug)]
pub struct Checks {
    pub expect: Expect,
    /// Every status must carry a `current_limit`: proves a rule matched, so a misspelt domain
    /// (which Tollgate answers OK without counting) cannot pass for a fast decision.
    pub require_limit: bool,
}

pub fn verify(
    result: Result<RateLimitResponse, tonic::Status>,
    descriptors: usize,
    checks: Checks,
) -> Result<Answer, Failure> {
    let response = result.map_err(|status| Failure::Grpc {
        code: status.code(),
        message: status.message().to_owned(),
    })?;
    let answer = match Code::try_from(response.overall_code) {
        Ok(Code::Ok) => Answer::Ok,
        Ok(Code::OverLimit) => Answer::OverLimit,
        Ok(Code::Unknown) | Err(_) => return Err(Failure::OverallCode(response.overall_code)),
    };
    if response.statuses.len() != descriptors {
        return Err(Failure::StatusCount {
            got: response.statuses.len(),
            want: descriptors,
        });
    }
    for (index, status) in response.statuses.iter().enumerate() {
        if !matches!(
            Code::try_from(status.code),
            Ok(Code::Ok) | Ok(Code::OverLimit)
        ) {
            return Err(Failure::StatusCode {
                index,
                code: status.code,
            });
        }
        if checks.require_limit && status.current_limit.is_none() {
            return Err(Failure::NoLimit { index });
        }
    }
    match (checks.expect, answer) {
        (Expect::Any, _) | (Expect::Ok, Answer::Ok) | (Expect::Over, Answer::OverLimit) => {
            Ok(answer)
        }
        (want, got) => Err(Failure::Unexpected { got, want }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate::proto::rate_limit_response::{DescriptorStatus, RateLimit};

    fn response(overall: Code, statuses: &[Code], with_limit: bool) -> RateLimitResponse {
        RateLimitResponse {
            overall_code: overall as i32,
            statuses: statuses
                .iter()
                .map(|&code| DescriptorStatus {
                    code: code as i32,
                    current_limit: with_limit.then(|| RateLimit {
                        requests_per_unit: 10,
                        unit: 2,
                        name: String::new(),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    const ANY: Checks = Checks {
        expect: Expect::Any,
        require_limit: false,
    };

    #[test]
    fn good_answers_pass() {
        let ok = response(Code::Ok, &[Code::Ok, Code::Ok], false);
        assert_eq!(verify(Ok(ok), 2, ANY), Ok(Answer::Ok));
        let over = response(Code::OverLimit, &[Code::Ok, Code::OverLimit], true);
        let checks = Checks {
            expect: Expect::Over,
            require_limit: true,
        };
        assert_eq!(verify(Ok(over), 2, checks), Ok(Answer::OverLimit));
    }

    #[test]
    fn grpc_errors_fail_with_their_code() {
        let failure = verify(Err(tonic::Status::unavailable("down")), 1, ANY).unwrap_err();
        assert_eq!(failure.kind(), "grpc Unavailable");
        assert!(failure.to_string().contains("down"));
    }

    #[test]
    fn unknown_and_invalid_codes_fail() {
        let unknown = response(Code::Unknown, &[Code::Ok], false);
        assert_eq!(verify(Ok(unknown), 1, ANY), Err(Failure::OverallCode(0)));
        let mut invalid = response(Code::Ok, &[Code::Ok], false);
        invalid.overall_code = 7;
        assert_eq!(verify(Ok(invalid), 1, ANY), Err(Failure::OverallCode(7)));
        let bad_status = response(Code::Ok, &[Code::Ok, Code::Unknown], false);
        assert_eq!(
            verify(Ok(bad_status), 2, ANY),
            Err(Failure::StatusCode { index: 1, code: 0 })
        );
    }

    #[test]
    fn statuses_must_match_descriptors_one_for_one() {
        let short = response(Code::Ok, &[Code::Ok], false);
        assert_eq!(
            verify(Ok(short), 3, ANY),
            Err(Failure::StatusCount { got: 1, want: 3 })
        );
    }

    #[test]
    fn expectations_and_required_limits_are_enforced() {
        let ok = || response(Code::Ok, &[Code::Ok], false);
        let want_over = Checks {
            expect: Expect::Over,
            require_limit: false,
        };
        let failure = verify(Ok(ok()), 1, want_over).unwrap_err();
        assert_eq!(failure.kind(), "unexpected Ok");
        let want_limit = Checks {
            expect: Expect::Ok,
            require_limit: true,
        };
        assert_eq!(
            verify(Ok(ok()), 1, want_limit),
            Err(Failure::NoLimit { index: 0 })
        );
        let over = response(Code::OverLimit, &[Code::OverLimit], false);
        let want_ok = Checks {
            expect: Expect::Ok,
            require_limit: false,
        };
        assert_eq!(
            verify(Ok(over), 1, want_ok).unwrap_err().kind(),
            "unexpected OverLimit"
        );
    }
}
