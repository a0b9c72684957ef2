//! What an API request produces, independent of the HTTP server that carries it: the
//! [`Response`] (`server` writes it as HTTP), and why a method produced no result
//! ([`Failure`], shared by every method module). Must not write bytes to a socket.

use crate::api::types::{self, ApiError};

/// The answer to one API request.
#[derive(Debug, PartialEq, Eq)]
pub enum Response {
    /// A JSON body with this HTTP status.
    Json(u16, Vec<u8>),
    /// No valid API key: 401 with an empty body.
    Unauthorized,
    /// Not a POST: 405 with `Allow: POST`.
    MethodNotAllowed,
}

impl Response {
    /// A `{"error": message}` body with this status.
    pub fn error(status: u16, message: &str) -> Response {
        Response::Json(status, crate::http::json_error_body(message))
    }
}

/// Why a method produced no `result`.
pub enum Failure {
    /// The body is not valid JSON for the method → HTTP 400.
    Undecodable,
    /// A Centrifugo method Rotor does not implement yet.
    Unsupported,
    /// A logical API error → `{"error":{...}}`.
    Api(ApiError),
}

impl Failure {
    /// The error a command gets inside a batch or the legacy route, where no HTTP status of
    /// its own can be sent: an undecodable body is 107, an unimplemented method 104.
    pub fn into_api_error(self) -> ApiError {
        match self {
            Failure::Undecodable => types::API_ERROR_BAD_REQUEST,
            Failure::Unsupported => types::API_ERROR_NOT_FOUND,
            Failure::Api(e) => e,
        }
    }
}
