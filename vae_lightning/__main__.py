from vae_lightning.cli import main

main()
