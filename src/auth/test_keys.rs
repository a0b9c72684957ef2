//! Fixed key pairs for the `auth` tests and the JWT bench (generated with openssl for this
//! project; the Ed25519 pair for the JWKS tests); the PEM files live in `testdata/`.

pub const RSA_PRIVATE_PEM: &str = include_str!("testdata/rsa_private.pem");

pub const RSA_PUBLIC_PEM: &str = include_str!("testdata/rsa_public.pem");

pub const EC_PRIVATE_PEM: &str = include_str!("testdata/ec_private.pem");

pub const EC_PUBLIC_PEM: &str = include_str!("testdata/ec_public.pem");

pub const ED25519_PRIVATE_PEM: &str = include_str!("testdata/ed25519_private.pem");

/// JWK members of the public keys above, base64url without padding (from `openssl
/// rsa|ec|pkey -pubin -text`: the RSA modulus and exponent, the P-256 point's x and y,
/// the raw 32-byte Ed25519 key).
pub const RSA_JWK_N: &str = "oVnczBFdmyOw3MgL5HxLYM90zr-bKcLaiZQ6hKExTTI-QuFouC7aYNKwB6T4XDfgV8YWJ9WJ7Mqg97673vsHohudjg1hhHrzkfaaqukjI-CJXGFTFKvEEoK9t-hvMZH9Zi-eL2DBtKlnD8VhUcaQtvHxSuwjVYbBmFTZtUTkxpDwb9Enai1CTSYaksTNgIPiG8s2Qfax-tvnctCi2csuaJreLVwbGj4bXPu5uY4pDSun6ABXyYFLZllae3VLCcvPLU9RnLoIlMZD6A-jq6xGyvDajcPVfyXZ92bUDxR06ND-volVDYzgex3IzbYOJwUJGZi3_lU5RncUVQa2RhQ1Xw";

pub const RSA_JWK_E: &str = "AQAB";

pub const EC_JWK_X: &str = "i8t6ergGGI2ZOc3PWPde1Mle_4lr_ZZg80d6Y53ZGXU";

pub const EC_JWK_Y: &str = "bKwyF4yyEbdrlTx-UmzvD-KItmungzpq1zZvtNruMxw";

pub const ED25519_JWK_X: &str = "PERgpunAKa6HyqRm4EO1_Q678ulUdOrh5k5lsctbkxE";
