//! Fixed key pairs for the `auth` tests and the JWT bench (generated with openssl for this
//! project); the PEM files live in `testdata/`.

pub const RSA_PRIVATE_PEM: &str = include_str!("testdata/rsa_private.pem");

pub const RSA_PUBLIC_PEM: &str = include_str!("testdata/rsa_public.pem");

pub const EC_PRIVATE_PEM: &str = include_str!("testdata/ec_private.pem");

pub const EC_PUBLIC_PEM: &str = include_str!("testdata/ec_public.pem");
