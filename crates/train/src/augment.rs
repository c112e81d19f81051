//! Data augmentation: small random shifts and rotations, applied per batch on
//! the device with an affine sampling grid (what torchvision's RandomAffine
//! does per image, here for a whole batch at once).

use sweep_core::config::AugmentConfig;
use tch::{Kind, Tensor};

use crate::TrainError;

/// Value of a blank (zero) pixel after normalisation: what moves into view at
/// the borders, so that a shifted digit keeps a black background.
const BACKGROUND: f64 = -0.1307 / 0.3081;

/// Shifts each image by up to `max_shift` pixels in x and y and rotates it by
/// up to `max_rotation` degrees, drawing from libtorch's (seeded) generator.
pub fn shift_and_rotate(images: &Tensor, config: &AugmentConfig) -> Result<Tensor, TrainError> {
    let size = images.size();
    let (n, h) = (size[0], size[2] as f64);
    let opts = (Kind::Float, images.device());
    let uniform = |bound: f64| (Tensor::rand([n], opts) * 2.0 - 1.0) * bound;
    let angle = uniform(config.max_rotation.to_radians());
    // affine_grid works in [-1, 1] coordinates: one pixel is 2/h.
    let shift = 2.0 * config.max_shift as f64 / h;
    let (tx, ty) = (uniform(shift), uniform(shift));
    let (cos, sin) = (angle.cos(), angle.sin());
    let theta = Tensor::f_stack(&[&cos, &(-&sin), &tx, &sin, &cos, &ty], 1)?.view([n, 2, 3]);
    let grid = Tensor::f_affine_grid_generator(&theta, size.as_slice(), false)?;
    // Sample the offset from the background so padding (zeros) is background.
    let moved = (images - BACKGROUND).f_grid_sampler(&grid, 0, 0, false)?;
    Ok(moved + BACKGROUND)
}
