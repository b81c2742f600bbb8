//! HTTP errors: a status from the Web3Signer contract (400, 404, 412, 503, 500) and a JSON body
//! `{"code": …, "message": …}` an operator can read.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, without secrets.
    pub message: String,
}

impl ApiError {
    /// 400.
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
    /// 503, with a hint to retry soon.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
        }
    }
    /// 412: refused by slashing protection.
    pub fn slashable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::PRECONDITION_FAILED,
            message: message.into(),
        }
    }
    /// 500.
    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.status.as_u16(), "message": self.message });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
