//! Image builds from a Dockerfile: the parser ([`dockerfile`]), the build context on the
//! daemon ([`context`]), and the steps run in containers of the engine ([`steps`]).

pub mod context;
pub mod dockerfile;
pub mod steps;
