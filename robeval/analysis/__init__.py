"""Analyses beyond accuracy-vs-eps tables: the single-Fourier-attack grid (Absum Table 1,
:mod:`robeval.analysis.sfa_grid`) and average Fourier spectra of natural images,
adversarial images and perturbations (local-response-differences Fig. 2, Absum Fig. 7;
:mod:`robeval.analysis.spectrum`)."""
