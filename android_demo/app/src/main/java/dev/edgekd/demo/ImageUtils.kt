package dev.edgekd.demo

import android.content.ContentResolver
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.Matrix
import android.net.Uri
import androidx.camera.core.ImageProxy
import java.io.IOException

/**
 * Decodes a gallery image the way the Python contract reads files: 8-bit RGB(A), alpha ignored
 * (not premultiplied), grey replicated to R=G=B by the decoder, EXIF orientation not applied
 * (PIL does not apply it either), full resolution (any subsampling here would change the resize).
 */
fun decodeImage(resolver: ContentResolver, uri: Uri): Bitmap {
    val options = BitmapFactory.Options().apply {
        inPreferredConfig = Bitmap.Config.ARGB_8888
        inPremultiplied = false
    }
    val bitmap = resolver.openInputStream(uri)?.use { BitmapFactory.decodeStream(it, null, options) }
    return bitmap ?: throw IOException("cannot decode $uri as an image")
}

/** A camera frame (RGBA_8888 analysis output) as an upright bitmap. */
fun ImageProxy.toUprightBitmap(): Bitmap {
    val frame = toBitmap() // CameraX 1.3+
    val degrees = imageInfo.rotationDegrees
    if (degrees == 0) return frame
    val matrix = Matrix().apply { postRotate(degrees.toFloat()) }
    return Bitmap.createBitmap(frame, 0, 0, frame.width, frame.height, matrix, false)
}
