"""The end-to-end demonstration behind `aetherctl demo`: a mobility operator forecasting demand per zone."""
