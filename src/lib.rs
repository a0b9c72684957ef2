//! Rotor
