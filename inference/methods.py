"""The methods ``inference.fit`` runs that are not SVI guides, by name: one line each in ``METHODS``.

A method is a function ``fitter(model, data, *, steps, lr, batch_size, temperature, seed, progress, **options)``
returning a Posterior; the SVI guides have their own table, ``inference.guides.GUIDES``.
"""
from .baselines import fit_ensemble, fit_mc_dropout
from .blob import fit_blob
from .fsp_laplace import fit_fsp_laplace
from .guides.ivon import fit_ivon
from .laplace import fit_laplace
from .lora import fit_laplace_lora, fit_lora_ensemble, fit_swag_lora
from .mcmc import fit_nuts, fit_reference

METHODS = {
    "nuts": fit_nuts,
    "reference": fit_reference,
    "laplace": fit_laplace,
    "fsp-laplace": fit_fsp_laplace,
    "ensemble": fit_ensemble,
    "mc_dropout": fit_mc_dropout,
    "laplace_lora": fit_laplace_lora,
    "swag_lora": fit_swag_lora,
    "lora_ensemble": fit_lora_ensemble,
    "blob": fit_blob,
    "ivon": fit_ivon,
}
